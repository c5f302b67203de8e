package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
)

// KubeHelperName is the program that follows the Kubernetes API for
// loomd. It is a program of its own because client-go, linked into
// loomd, made every agent about 12 MiB larger whether it used the
// Kubernetes source or not.
const KubeHelperName = "loom-kube-policy"

// kubeFirstViewTimeout bounds the wait for the helper's first view: its
// own sync timeout (a minute) and its start.
const kubeFirstViewTimeout = 75 * time.Second

// Restart delays of a helper that ended: doubling from the first to the
// second, back to the first after a run that delivered a view.
const (
	kubeRestartMin = time.Second
	kubeRestartMax = 30 * time.Second
)

// kubeHelperPath finds the helper next to loomd's own binary (where the
// image and `make build` put it), else on PATH.
func kubeHelperPath() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), KubeHelperName)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(KubeHelperName)
	if err != nil {
		return "", fmt.Errorf("%s is neither next to loomd nor on PATH", KubeHelperName)
	}
	return p, nil
}

// kubeWatcher runs the helper and hands its views to the agent. When the
// helper ends it is started again; the last view stays in force meanwhile.
type kubeWatcher struct {
	argv    []string
	onView  func(policy.ClusterView)
	onError func(error)
	// restartMin is kubeRestartMin but for tests.
	restartMin time.Duration
	cancel     context.CancelFunc
	done       chan struct{}
}

// start runs the helper until its first view has been handed over, so no
// pod is served before its policies are known, and then keeps it running
// until stop (or ctx's end).
func (w *kubeWatcher) start(ctx context.Context, firstTimeout time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	first := make(chan struct{})
	var once sync.Once
	ended := make(chan error, 1)
	go func() {
		ended <- w.runOnce(ctx, func() { once.Do(func() { close(first) }) })
	}()
	timeout := time.NewTimer(firstTimeout)
	defer timeout.Stop()
	select {
	case <-first:
	case err := <-ended:
		cancel()
		return err
	case <-timeout.C:
		cancel()
		<-ended
		return fmt.Errorf("%s sent no view of the cluster within %v", KubeHelperName, firstTimeout)
	}
	w.cancel, w.done = cancel, make(chan struct{})
	go w.supervise(ctx, ended)
	return nil
}

// stop ends the helper and returns once it has gone.
func (w *kubeWatcher) stop() {
	w.cancel()
	<-w.done
}

// supervise restarts the helper whenever it ends, until ctx ends.
func (w *kubeWatcher) supervise(ctx context.Context, ended chan error) {
	defer close(w.done)
	delay := w.restartMin
	var viewed atomic.Bool
	viewed.Store(true) // the first run delivered its first view
	for {
		err := <-ended
		if ctx.Err() != nil {
			return
		}
		if viewed.Swap(false) {
			delay = w.restartMin
		}
		w.onError(fmt.Errorf("%w; restarting it in %v, the last view stays in force", err, delay))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, kubeRestartMax)
		go func() { ended <- w.runOnce(ctx, func() { viewed.Store(true) }) }()
	}
}

// runOnce runs the helper and hands over its views until it ends, and
// says why it ended (never nil).
func (w *kubeWatcher) runOnce(ctx context.Context, viewed func()) error {
	cmd := exec.CommandContext(ctx, w.argv[0], w.argv[1:]...)
	// The helper reads its standard input to its end, which comes when
	// loomd has gone, however it went (the kernel closes a dead process's
	// files). Pdeathsig would be no better: it follows the thread that
	// forked, not the process.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &tailWriter{out: os.Stderr}
	cmd.Stderr = stderr
	// Its own process group: a Ctrl-C meant for loomd stops loomd, which
	// then stops the helper, instead of the helper dying first and
	// being reported as a failure.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", w.argv[0], err)
	}
	readErr := policy.ReadClusterViews(stdout, func(v policy.ClusterView) {
		w.onView(v)
		viewed()
	})
	if readErr != nil {
		cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case readErr != nil:
		return fmt.Errorf("%s sent something that is not a view: %w", KubeHelperName, readErr)
	case waitErr != nil:
		return fmt.Errorf("%s %v: %s", KubeHelperName, waitErr, stderr.lastLine())
	default:
		return fmt.Errorf("%s ended: %s", KubeHelperName, stderr.lastLine())
	}
}

// tailWriter passes the helper's log through to loomd's standard error and
// keeps its end, whose last line says why the helper stopped.
type tailWriter struct {
	out  io.Writer
	mu   sync.Mutex
	tail []byte
}

// tailKeep bounds what tailWriter keeps: more than one log line.
const tailKeep = 4096

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.tail = append(t.tail, p...)
	if len(t.tail) > tailKeep {
		t.tail = t.tail[len(t.tail)-tailKeep:]
	}
	t.mu.Unlock()
	t.out.Write(p) // a log that cannot be written must not stop the helper
	return len(p), nil
}

// lastLine is the last non-empty line written, or a note that there was
// none.
func (t *tailWriter) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := bytes.TrimSpace(t.tail)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if len(b) == 0 {
		return "(it wrote nothing to standard error)"
	}
	return string(b)
}

// startKubernetesPolicies starts the helper that follows the API server
// and waits for its first full view of policies, pods and namespaces.
func (a *Agent) startKubernetesPolicies(ctx context.Context) (*kubeWatcher, error) {
	path, err := kubeHelperPath()
	if err != nil {
		return nil, flagErr("policy-source", "kubernetes: %v", err)
	}
	argv := []string{path, "--log-level", a.cfg.LogLevel, "--log-format", a.cfg.LogFormat}
	if a.cfg.Kubeconfig != "" {
		argv = append(argv, "--kubeconfig", a.cfg.Kubeconfig)
	}
	w := &kubeWatcher{
		argv:       argv,
		onView:     a.clusterViewed,
		onError:    a.policyLoaded,
		restartMin: kubeRestartMin,
	}
	if err := w.start(ctx, kubeFirstViewTimeout); err != nil {
		return nil, fmt.Errorf("kubernetes policy source: %w", err)
	}
	a.log.Info("following network policies from the Kubernetes API", zap.String("helper", path))
	return w, nil
}

// clusterViewed puts a view from the Kubernetes source in force.
func (a *Agent) clusterViewed(v policy.ClusterView) {
	a.kubeNodes.update(v)
	objs, err := v.Objects()
	a.policy.setObjects(objs, v.Pods)
	a.policyLoaded(err)
	a.trigger()
}
