package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// requireRoot skips a test that needs root and namespaces, or fails it when
// LOOM_REQUIRE_ROOT_TESTS=1 (CI), so a misconfigured CI cannot go green by
// skipping everything.
func requireRoot(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nsenter", "ping", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "integration test needs " + strings.Join(missing, ", ") + " (run 'make test' as root; it installs the tools)"
	if os.Getenv("LOOM_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// binaries builds loomd, loom and loomctl once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "loom-it-bin-")
		if buildErr == nil {
			buildErr = rig.Build("..", binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// newRig creates a rig that is torn down when the test ends, dumping the
// agents' logs if it failed.
func newRig(t *testing.T, agentArgs ...string) *rig.Rig {
	t.Helper()
	return newRigWith(t, rig.Options{AgentArgs: agentArgs})
}

// newRigWith is newRig with more of the rig's options (its binaries and
// log are the test's).
func newRigWith(t *testing.T, opts rig.Options) *rig.Rig {
	t.Helper()
	requireRoot(t)
	opts.BinDir, opts.Logf = binaries(t), t.Logf
	r, err := rig.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Agents first, so that what they log while stopping is read too.
		for _, n := range r.Nodes() {
			n.Stop(syscall.SIGTERM)
		}
		// Agents built by `make test-race` report races in their logs
		// and carry on; the test that drove them into it fails.
		for _, n := range r.Nodes() {
			if races := rig.RaceReports(n.LogPath()); races != "" {
				t.Errorf("race detector in loomd on %s:\n%s", n.Name, races)
			}
		}
		if t.Failed() {
			for _, n := range r.Nodes() {
				t.Logf("--- loomd log of %s ---\n%s", n.Name, rig.Tail(n.LogPath(), 40))
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("rig cleanup: %v", err)
		}
	})
	return r
}

// startNodes adds and starts count nodes named prefix1.., each joining the
// first, and waits until all are ready.
func startNodes(t *testing.T, r *rig.Rig, count int) []*rig.Node {
	t.Helper()
	var nodes []*rig.Node
	for i := 1; i <= count; i++ {
		n, err := r.AddNode(fmt.Sprintf("node%d", len(r.Nodes())+1))
		if err != nil {
			t.Fatal(err)
		}
		var join []*rig.Node
		if all := r.Nodes(); len(all) > 1 {
			join = all[:1]
		}
		if err := n.Start(join...); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, r.Nodes())
	return nodes
}

// waitNotReadyFor waits until n's agent says it is not ready, for
// reasons that mention each of wants.
func waitNotReadyFor(t *testing.T, n *rig.Node, timeout time.Duration, wants ...string) {
	t.Helper()
	if err := rig.Eventually(timeout, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		why := strings.Join(st.Node.NotReady, "; ")
		for _, want := range wants {
			if st.Node.Ready || !strings.Contains(why, want) {
				return fmt.Errorf("%s ready %v, not ready because %q; want not ready, %q", n.Name, st.Node.Ready, why, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// overlayAddr is n's overlay address: its subnet's first address.
func overlayAddr(t *testing.T, n *rig.Node) netip.Addr {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := netip.ParsePrefix(st.Node.Subnet)
	if err != nil {
		t.Fatalf("%s's subnet: %v", n.Name, err)
	}
	return subnet.Addr()
}

// waitConverged waits until every running node has programmed every other
// running node: the fabric has agreed on who is where.
func waitConverged(t *testing.T, all []*rig.Node) {
	t.Helper()
	var running []*rig.Node
	for _, n := range all {
		if n.Running() {
			running = append(running, n)
		}
	}
	for _, n := range running {
		n := n
		err := rig.Eventually(30*time.Second, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			programmed := map[string]bool{}
			for _, p := range st.Peers {
				programmed[p.Name] = p.Programmed
			}
			for _, o := range running {
				if o != n && !programmed[o.Name] {
					return fmt.Errorf("%s has not programmed %s", n.Name, o.Name)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// startReady starts n's agent, joining join, and waits until it is ready.
func startReady(t *testing.T, n *rig.Node, join ...*rig.Node) {
	t.Helper()
	if err := n.Start(join...); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// addStarted adds a node and starts its agent joining join, without
// waiting for it to be ready (it may wait for a subnet).
func addStarted(t *testing.T, r *rig.Rig, name string, join ...*rig.Node) *rig.Node {
	t.Helper()
	n, err := r.AddNode(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(join...); err != nil {
		t.Fatal(err)
	}
	return n
}

// wholeLog is a line count for rig.Tail that reads a test agent's whole
// log: agents log at debug level, so a line a test looks for can be
// thousands of lines back.
const wholeLog = 1 << 30

func addPod(t *testing.T, n *rig.Node, name string) *rig.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := n.AddPod(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitAllReach waits until every ordered pair of pods pings.
func waitAllReach(t *testing.T, pods []*rig.Pod, timeout time.Duration) {
	t.Helper()
	err := rig.Eventually(timeout, func() error {
		var bad []string
		for _, res := range rig.PingAll(pods) {
			if res.Err != nil {
				bad = append(bad, fmt.Sprintf("%s(%s)->%s(%s)", res.From.Name, res.From.IP, res.To.Name, res.To.IP))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%d of %d pairs unreachable: %s", len(bad), len(pods)*(len(pods)-1), strings.Join(bad, " "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitLogged waits until n's agent has logged text.
func waitLogged(t *testing.T, n *rig.Node, text string, timeout time.Duration) {
	t.Helper()
	if err := rig.Eventually(timeout, func() error {
		if !strings.Contains(rig.Tail(n.LogPath(), wholeLog), text) {
			return fmt.Errorf("%s has not logged %q", n.Name, text)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// listenIn is rig.ListenIn, closed when the test ends.
func listenIn(t *testing.T, nsName, addr string) net.Listener {
	t.Helper()
	l, err := rig.ListenIn(nsName, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveIn accepts and closes connections on addr in a namespace until the
// test ends.
func serveIn(t *testing.T, nsName, addr string) {
	t.Helper()
	stop, err := rig.ServeTCPIn(nsName, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

// dialFrom connects from inside a namespace and sends one line.
func dialFrom(nsName, addr string) error {
	return ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello\n"))
		return err
	})
}

// peerAddrSeen accepts one connection on l and returns the address it came
// from, as the receiving application sees it.
func peerAddrSeen(t *testing.T, l net.Listener, dial func() error) netip.Addr {
	t.Helper()
	got := make(chan netip.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(got)
			return
		}
		defer c.Close()
		buf := make([]byte, 6)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(buf)
		got <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()
	}()
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	select {
	case a, ok := <-got:
		if !ok {
			t.Fatal("accept failed")
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no connection arrived")
	}
	return netip.Addr{}
}

// kernelEntries returns the node's routes, neighbours and FDB entries on the
// VXLAN device, as an operator would list them.
func kernelEntries(t *testing.T, n *rig.Node) string {
	t.Helper()
	var out []string
	for _, cmd := range [][]string{
		{"ip", "-4", "route", "show", "proto", "76"},
		{"ip", "-4", "neigh", "show", "dev", "loom.1"},
		{"bridge", "fdb", "show", "dev", "loom.1"},
	} {
		o, err := n.Exec(cmd[0], cmd[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	return strings.Join(out, "")
}
