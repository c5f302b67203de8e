package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
)

var (
	refOnce sync.Once
	refDir  string
	refErr  error
)

// referencePlugins builds portmap, bandwidth, bridge and host-local once.
func referencePlugins(t *testing.T) string {
	t.Helper()
	refOnce.Do(func() {
		refDir = filepath.Join(binaries(t), "ref")
		refErr = rig.BuildReferencePlugins("..", refDir)
	})
	if refErr != nil {
		t.Fatal(refErr)
	}
	return refDir
}

func cniCode(err error) uint {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// TestCNIStatus: STATUS (through libcni) says ready while the agent serves
// and "plugin not available" (50) with a reason while it is down.
func TestCNIStatus(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS of a ready node: %v", err)
	}
	n.Stop(syscall.SIGTERM)
	err = cni.GetStatusNetworkList(ctx, list)
	if cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), n.Socket) {
		t.Fatalf("STATUS with the agent down: %v, want code 50 naming the socket", err)
	}
}

// TestCNIConfigDirInTheWay: while loomd cannot write its conflist (here a
// file stands where --cni-conf-dir should be), no pod can start on the
// node, so it must not say it is ready, and it must say why; once the way
// is clear it writes the conflist by itself, without waiting for the next
// periodic resync (30 s).
func TestCNIConfigDirInTheWay(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.ConfDir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	waitNotReadyFor(t, n, 20*time.Second, "CNI config not written", n.ConfDir)
	if err := os.Remove(n.ConfDir); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(15 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestCNIGarbageCollection: GC through libcni with the runtime's valid
// attachments releases everything else, including host veths no allocation
// accounts for, and leaves the valid pods working.
func TestCNIGarbageCollection(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	keep, gone1, gone2 := addPod(t, n, "keep"), addPod(t, n, "gone1"), addPod(t, n, "gone2")
	mustExec(t, n, "ip", "link", "add", "loom0123456789a", "type", "veth", "peer", "name", "strayp")
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keep.ContainerID, IfName: "eth0"}}})
	if err != nil {
		t.Fatal(err)
	}
	allocs, err := n.Client().Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0].ContainerID != keep.ContainerID {
		t.Fatalf("allocations after GC = %+v, want only %s", allocs, keep.ContainerID)
	}
	if veths := podVeths(t, n); len(veths) != 1 {
		t.Fatalf("host veths after GC = %v, want only the kept pod's", veths)
	}
	for _, p := range []*rig.Pod{gone1, gone2} {
		if out, _ := n.Exec("ip", "route", "show", p.IP.String()); strings.TrimSpace(out) != "" {
			t.Fatalf("route to collected pod %s left: %s", p.IP, out)
		}
	}
	if err := keep.Check(ctx); err != nil {
		t.Fatalf("CHECK of the kept pod after GC: %v", err)
	}
	if err := rig.Ping(n.NS, keep.IP); err != nil {
		t.Fatal(err)
	}
}

// TestCNISubnetExhausted: a full subnet fails ADD with a clear error, and
// status shows the usage.
func TestCNISubnetExhausted(t *testing.T) {
	r := newRig(t, "--subnet-prefix", "29") // 6 pod addresses
	n := startNodes(t, r, 1)[0]
	var pods []*rig.Pod
	for i := 0; i < 6; i++ {
		pods = append(pods, addPod(t, n, fmt.Sprint("p", i)))
	}
	p, err := n.NewPodNS("one-too-many")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Add(context.Background())
	if err == nil || !strings.Contains(err.Error(), "subnet exhausted") {
		t.Fatalf("ADD in a full subnet: %v, want a 'subnet exhausted' error", err)
	}
	st, _ := n.Status()
	if st.Node.PodsUsed != 6 || st.Node.PodsTotal != 6 {
		t.Fatalf("status shows %d/%d addresses used, want 6/6", st.Node.PodsUsed, st.Node.PodsTotal)
	}
	if err := pods[0].Del(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(context.Background()); err != nil {
		t.Fatalf("ADD after a DEL freed an address: %v", err)
	}
}

// TestCNIRepeatedAddIsIdempotent: an ADD retried for a working attachment
// returns the same address and leaves the pod working.
func TestCNIRepeatedAddIsIdempotent(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	p := addPod(t, n, "p")
	first := p.IP
	if err := p.Add(context.Background()); err != nil {
		t.Fatalf("repeated ADD: %v", err)
	}
	if p.IP != first {
		t.Fatalf("repeated ADD gave %s, first gave %s", p.IP, first)
	}
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rig.Ping(n.NS, p.IP); err != nil {
		t.Fatal(err)
	}
}

// TestCNIDelThenRestart: DEL answers before the veth pair is destroyed;
// an agent killed in that window leaves the veth down, and once restarted
// it deletes it, so the same attachment can be added again and works.
func TestCNIDelThenRestart(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	p := addPod(t, n, "p")
	hostIf := delKeepingNetns(t, n, p)
	n.Stop(syscall.SIGKILL)
	if _, err := n.Exec("ip", "link", "show", hostIf); err != nil {
		t.Fatalf("veth %s already gone when the agent died: the test needs it pending (%v)", hostIf, err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Add(ctx); err != nil {
		t.Fatalf("ADD of the deleted attachment after the restart: %v", err)
	}
	if err := rig.Ping(n.NS, p.IP); err != nil {
		t.Fatal(err)
	}
}

// TestCNIDelThenStop stops the agent while a deleted pod's veth waits for
// its background deletion: the agent finishes the deletion before it
// exits (with the kernel handle still open), instead of leaving the veth
// behind or deleting through a closed handle.
func TestCNIDelThenStop(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	p := addPod(t, n, "p")
	hostIf := delKeepingNetns(t, n, p)
	if err := n.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Exec("ip", "link", "show", hostIf); err == nil {
		t.Fatalf("veth of a deleted pod outlived the agent's shutdown: %s", out)
	}
}

// delKeepingNetns runs CNI DEL for p but leaves its netns in place, as a
// runtime that is slow to remove it would, and returns the pod's host
// veth, which the agent then deletes in the background.
func delKeepingNetns(t *testing.T, n *rig.Node, p *rig.Pod) string {
	t.Helper()
	veths := podVeths(t, n)
	if len(veths) != 1 {
		t.Fatalf("pod veths before DEL: %v, want one", veths)
	}
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	if err := cni.DelNetworkList(context.Background(), list, p.RuntimeConf()); err != nil {
		t.Fatal(err)
	}
	return veths[0]
}

// TestCNIBadInput runs the plugin as a runtime would, with broken input:
// each case gets the spec's error code and a message naming the problem,
// never a panic, and leaves nothing attached.
func TestCNIBadInput(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	p, err := n.NewPodNS("victim")
	if err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"loom","type":"loom","socket":%q}`, n.Socket)
	netns := "/run/netns/" + p.NS
	cases := []struct {
		name, stdin, netns, ifname, args string
		code                             uint
		mention                          string
	}{
		{"stdin not JSON", `{"cniVersion": "1.0.0", "name":`, netns, "eth0", "", types.ErrDecodingFailure, "network config"},
		{"unsupported cniVersion", strings.Replace(good, "1.0.0", "9.9.9", 1), netns, "eth0", "", types.ErrIncompatibleCNIVersion, "9.9.9"},
		{"missing cniVersion", `{"name":"loom","type":"loom"}`, netns, "eth0", "", 0, "cniVersion"},
		{"netns does not exist", good, "/run/netns/no-such-netns", "eth0", "", types.ErrInvalidNetNS, "no-such-netns"},
		{"ifname with a slash", good, netns, "et/h0", "", types.ErrInvalidEnvironmentVariables, "interface name"},
		{"ifname too long", good, netns, "abcdefghijklmnopq", "", types.ErrInvalidEnvironmentVariables, "interface name"},
		{"CNI_ARGS garbage", good, netns, "eth0", "K8S_POD_NAME", types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
		{"pod UID with a slash", good, netns, "eth0", "K8S_POD_UID=a/b", types.ErrInvalidEnvironmentVariables, `pod UID "a/b"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("nsenter", "--net=/run/netns/"+n.NS, "--", filepath.Join(binaries(t), "loom"))
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bad-" + strings.ReplaceAll(c.name, " ", "-"),
				"CNI_NETNS=" + c.netns, "CNI_IFNAME=" + c.ifname, "CNI_PATH=" + n.CNIBin, "CNI_ARGS=" + c.args}
			cmd.Stdin = strings.NewReader(c.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("plugin accepted bad input; stdout %s", stdout.String())
			}
			if strings.Contains(stderr.String(), "panic") || strings.Contains(stdout.String(), "panic") {
				t.Fatalf("plugin panicked: %s", stderr.String())
			}
			var e types.Error
			if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
				t.Fatalf("error output is not a CNI error: %q", stdout.String())
			}
			if c.code != 0 && e.Code != c.code {
				t.Fatalf("code %d (%s), want %d", e.Code, e.Msg, c.code)
			}
			if !strings.Contains(e.Msg+e.Details, c.mention) {
				t.Fatalf("message %q does not mention %q", e.Msg, c.mention)
			}
		})
	}
	allocs, err := n.Client().Pods(context.Background())
	if err != nil || len(allocs) != 0 {
		t.Fatalf("bad input left allocations: %+v %v", allocs, err)
	}
	if out, _ := p.Exec("ip", "-o", "link", "show"); strings.Contains(out, "eth0") {
		t.Fatalf("bad input left an interface in the pod:\n%s", out)
	}
}

// TestCNIConcurrentChurn: 32 workers run 2,000 ADD/DEL cycles in total
// through libcni against one node. No address is ever held twice, and at
// the end nothing is left: no allocation, veth or route, and the agent
// holds no more file descriptors or goroutines than before (nothing is
// leaked per request).
func TestCNIConcurrentChurn(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	fdsBefore, goroutinesBefore := openFDs(t, n), goroutines(t, n)
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	const workers, cycles = 32, 2000
	var mu sync.Mutex
	held := map[string]string{}
	next := 0
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		pod, err := n.NewPodNS(fmt.Sprint("w", w))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(pod *rig.Pod) {
			defer wg.Done()
			ctx := context.Background()
			for {
				mu.Lock()
				if next >= cycles || firstErr != nil {
					mu.Unlock()
					return
				}
				next++
				i := next
				mu.Unlock()
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s-c%d", pod.ContainerID, i), NetNS: "/run/netns/" + pod.NS, IfName: "eth0"}
				res, err := cni.AddNetworkList(ctx, list, rt)
				fail := func(e error) {
					mu.Lock()
					if firstErr == nil {
						firstErr = e
					}
					mu.Unlock()
				}
				if err != nil {
					fail(fmt.Errorf("ADD %s: %w", rt.ContainerID, err))
					return
				}
				addr := resultIP(t, res)
				mu.Lock()
				if other, dup := held[addr]; dup {
					mu.Unlock()
					fail(fmt.Errorf("address %s handed to %s while %s holds it", addr, rt.ContainerID, other))
					return
				}
				held[addr] = rt.ContainerID
				mu.Unlock()
				if i%10 == 0 {
					if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
						fail(fmt.Errorf("CHECK %s: %w", rt.ContainerID, err))
						return
					}
				}
				// The address stops being ours the moment DEL starts.
				mu.Lock()
				delete(held, addr)
				mu.Unlock()
				if err := cni.DelNetworkList(ctx, list, rt); err != nil {
					fail(fmt.Errorf("DEL %s: %w", rt.ContainerID, err))
					return
				}
			}
		}(pod)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	assertNoPodState(t, n)
	// Some descriptors and goroutines start on first use; a leak per
	// request would show as thousands. Closed API connections take a
	// moment to be reaped.
	const slack = 16
	if err := rig.Eventually(10*time.Second, func() error {
		fds, gs := openFDs(t, n), goroutines(t, n)
		if fds > fdsBefore+slack || gs > goroutinesBefore+slack {
			return fmt.Errorf("loomd holds %d file descriptors and %d goroutines after the churn, %d and %d before", fds, gs, fdsBefore, goroutinesBefore)
		}
		t.Logf("loomd file descriptors / goroutines: %d / %d before the churn, %d / %d after", fdsBefore, goroutinesBefore, fds, gs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// openFDs counts the file descriptors n's agent holds.
func openFDs(t *testing.T, n *rig.Node) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.Pid()))
	if err != nil {
		t.Fatalf("file descriptors of loomd on %s: %v", n.Name, err)
	}
	return len(fds)
}

// goroutines reads n's agent's go_goroutines gauge.
func goroutines(t *testing.T, n *rig.Node) int {
	t.Helper()
	v, ok := getMetric(t, n, "go_goroutines", "")
	if !ok {
		t.Fatalf("loomd on %s exports no go_goroutines", n.Name)
	}
	return int(v)
}

func resultIP(t *testing.T, res types.Result) string {
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	json.Unmarshal(b, &r)
	if len(r.IPs) != 1 {
		t.Fatalf("result has %d IPs", len(r.IPs))
	}
	return r.IPs[0].Address
}

// assertNoPodState fails unless the node holds no allocation, no pod veth
// and no pod route.
func assertNoPodState(t *testing.T, n *rig.Node) {
	t.Helper()
	allocs, err := n.Client().Pods(context.Background())
	if err != nil || len(allocs) != 0 {
		t.Fatalf("allocations left: %d (%v)", len(allocs), err)
	}
	// DEL destroys veths in the background, right after it returns.
	if err := rig.Eventually(5*time.Second, func() error {
		if veths := podVeths(t, n); len(veths) != 0 {
			return fmt.Errorf("pod veths left: %v", veths)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	routes := mustExec(t, n, "ip", "-4", "route", "show", "proto", "76")
	if strings.Count(strings.TrimSpace(routes), "\n") != 0 || !strings.Contains(routes, "unreachable") {
		t.Fatalf("pod routes left:\n%s", routes)
	}
}

// TestCNICrashRecovery kills the agent in the middle of a burst of ADDs
// and DELs and restarts it. The runtime then retries the DELs that failed
// and runs GC with its true list: store and kernel match the surviving pods
// exactly.
func TestCNICrashRecovery(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	type attachment struct {
		rt         *libcni.RuntimeConf
		delPending bool // DEL attempted and failed: the runtime owes a retry
		deleted    bool
	}
	var mu sync.Mutex
	var attached []*attachment
	failures := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pod, err := n.NewPodNS(fmt.Sprintf("c%d-%d", w, i))
				if err != nil {
					return
				}
				rt := pod.RuntimeConf()
				if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
					mu.Lock()
					failures++
					mu.Unlock()
					continue // the runtime gives up on this sandbox
				}
				a := &attachment{rt: rt}
				mu.Lock()
				attached = append(attached, a)
				mu.Unlock()
				if i%2 == 0 {
					err := cni.DelNetworkList(ctx, list, rt)
					mu.Lock()
					a.deleted, a.delPending = err == nil, err != nil
					if err != nil {
						failures++
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	count := func(f func() bool) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if !f() {
				return fmt.Errorf("%d attached, %d failures so far", len(attached), failures)
			}
			return nil
		}
	}
	if err := rig.Eventually(60*time.Second, count(func() bool { return len(attached) >= 24 })); err != nil {
		t.Fatal(err)
	}
	n.Stop(syscall.SIGKILL)
	// The burst goes on against the dead agent until calls have failed.
	if err := rig.Eventually(30*time.Second, count(func() bool { return failures >= 8 })); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := len(attached)
	mu.Unlock()
	if err := rig.Eventually(30*time.Second, count(func() bool { return len(attached) >= before+8 })); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()

	ctx := context.Background()
	var valid []types.GCAttachment
	want := map[string]bool{}
	for _, a := range attached {
		if a.delPending {
			if err := cni.DelNetworkList(ctx, list, a.rt); err != nil {
				t.Fatalf("retried DEL %s: %v", a.rt.ContainerID, err)
			}
			a.deleted = true
		}
		if !a.deleted {
			valid = append(valid, types.GCAttachment{ContainerID: a.rt.ContainerID, IfName: "eth0"})
			want[a.rt.ContainerID] = true
		}
	}
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatal(err)
	}
	allocs, err := n.Client().Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]api.Allocation{}
	for _, a := range allocs {
		got[a.ContainerID] = a
	}
	if len(got) != len(want) {
		t.Fatalf("%d allocations after recovery, the runtime holds %d", len(got), len(want))
	}
	for id := range want {
		a, ok := got[id]
		if !ok {
			t.Fatalf("surviving pod %s lost its allocation", id)
		}
		if _, err := n.Exec("ip", "link", "show", a.HostIf); err != nil {
			t.Fatalf("surviving pod %s has no host veth", id)
		}
		ip, _, _ := net.ParseCIDR(a.IP)
		if err := rig.Ping(n.NS, mustAddr(ip)); err != nil {
			t.Fatalf("surviving pod %s unreachable: %v", id, err)
		}
	}
	if c := len(podVeths(t, n)); c != len(want) {
		t.Fatalf("%d pod veths on the node, want %d", c, len(want))
	}
	if c := strings.Count(mustExec(t, n, "ip", "-4", "route", "show", "proto", "76"), "dev loom"); c != len(want) {
		t.Fatalf("%d pod routes, want %d", c, len(want))
	}
}

func mustAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

// podVeths lists the node's host-side pod veths by name.
func podVeths(t *testing.T, n *rig.Node) []string {
	t.Helper()
	var links []struct {
		Name string `json:"ifname"`
	}
	readJSON(t, n, &links, "ip", "-j", "link", "show", "type", "veth")
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Name, "loom") {
			out = append(out, l.Name)
		}
	}
	return out
}

// TestReconcileKeepsPodGateways: the reconcile after each ADD finds the
// gateway address already on every pod's veth from one listing of the
// node's addresses (linksWithGateway), so it adds none again: each ADD
// writes the new pod's gateway once, when it attaches it.
func TestReconcileKeepsPodGateways(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	metric := func(name, match string) float64 { return mustMetric(t, n, name, match) }
	var pods []*rig.Pod
	for i := range 4 {
		reconciles := metric("loom_reconcile_runs_total", `reason="change",result="ok"`)
		addrWrites := metric("loom_netlink_writes_total", `kind="addr"`)
		pods = append(pods, addPod(t, n, fmt.Sprintf("p%d", i)))
		if err := rig.Eventually(10*time.Second, func() error {
			if v := metric("loom_reconcile_runs_total", `reason="change",result="ok"`); v <= reconciles {
				return fmt.Errorf("%v reconciles after pod %d's ADD, want more than %v", v, i, reconciles)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if v := metric("loom_netlink_writes_total", `kind="addr"`) - addrWrites; v != 1 {
			t.Fatalf("pod %d's ADD and the reconcile after it wrote %v addresses, want its gateway's 1", i, v)
		}
	}
	waitAllReach(t, pods, 10*time.Second)
}

// TestCNIBurstReconcilesPaced: pods attached and deleted one after
// another on a node running many make reconciles no more often than the
// pace, ten times what a reconcile takes (counted from its end, at most
// 2 s), not one per request: each reconcile costs more the more pods the
// node runs, and at 200 pods they made ADD take twice as long. 20 ADD+DEL
// pairs used to make about 60 reconciles, several times what the pace
// allows. What the burst leaves still reaches the other nodes' pod
// directories.
func TestCNIBurstReconcilesPaced(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	n := nodes[0]
	const resident, pairs = 50, 20
	for i := range resident {
		addPod(t, n, fmt.Sprintf("res%d", i))
	}
	reconciles := func() (runs, seconds float64) {
		return mustMetric(t, n, "loom_reconcile_duration_seconds_count", ""), mustMetric(t, n, "loom_reconcile_duration_seconds_sum", "")
	}
	runs0, seconds0 := reconciles()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	for i := range pairs {
		p := addPod(t, n, fmt.Sprintf("burst%d", i))
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	runs1, seconds1 := reconciles()
	// Each reconcile of the burst starts at least a pace after the one
	// before ended, so the burst holds at most elapsed/pace of them, plus
	// one at its start, a periodic resync and one while the metrics were
	// read.
	runs := runs1 - runs0
	pace := 2 * time.Second
	if runs > 0 {
		pace = min(pace, time.Duration(10*(seconds1-seconds0)/runs*float64(time.Second)))
	}
	if most := float64(elapsed/pace) + 3; runs > most {
		t.Fatalf("%d ADD+DEL pairs in %v made %v reconciles, more than the %v a pace of %v allows", pairs, elapsed, runs, most, pace)
	}
	t.Logf("%d ADD+DEL pairs in %v: %v reconciles (a pace of %v allows %v)", pairs, elapsed, runs, pace, float64(elapsed/pace)+3)
	if err := rig.Eventually(20*time.Second, func() error {
		live, err := nodes[1].Metric("loom_pod_directory_records", `state="live"`)
		if err != nil {
			return err
		}
		if live != resident {
			return fmt.Errorf("node2 holds %v live pod records, want node1's %d residents", live, resident)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
