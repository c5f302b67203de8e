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

// start runs the helper, and again whenever it ends, until stop (or
// ctx's end). It does not wait for the first view: the API server may be
// down for a while, and the agent must join the fabric meanwhile (its
// pods wait for the view; see policyState.pending).
func (w *kubeWatcher) start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go w.supervise(ctx)
}

// stop ends the helper and returns once it has gone.
func (w *kubeWatcher) stop() {
	w.cancel()
	<-w.done
}

// supervise runs the helper and restarts it whenever it ends, until ctx
// ends.
func (w *kubeWatcher) supervise(ctx context.Context) {
	defer close(w.done)
	delay := w.restartMin
	everViewed := false
	for {
		viewed := false
		err := w.runOnce(ctx, func() { viewed = true })
		if ctx.Err() != nil {
			return
		}
		if viewed {
			everViewed, delay = true, w.restartMin
		}
		then := "the last view stays in force"
		if !everViewed {
			then = "no view yet: pods wait"
		}
		w.onError(fmt.Errorf("%w; restarting it in %v, %s", err, delay, then))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, kubeRestartMax)
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

// startKubernetesPolicies starts the helper that follows the API server.
// Until its first full view of policies, pods and namespaces has arrived
// the agent serves no pods and leaves the firewall as it is.
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
	w.start(ctx)
	a.log.Info("following network policies from the Kubernetes API; pods wait for its first view", zap.String("helper", path))
	return w, nil
}

// clusterViewed puts a view from the Kubernetes source in force.
func (a *Agent) clusterViewed(v policy.ClusterView) {
	if a.policy.pending() {
		a.log.Info("first view of the Kubernetes API: putting its network policies in force and serving pods",
			zap.Int("policies", len(v.Policies)), zap.Int("pods", len(v.Pods)))
	}
	a.kubeNodes.update(v)
	objs, err := v.Objects()
	a.policy.setObjects(objs, v.Pods)
	a.policyLoaded(err)
	a.trigger()
}
