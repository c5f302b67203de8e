package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestDriftIsRepaired breaks a node's data plane by hand in every way the
// issue lists and waits, with a deadline, for the agent to repair it
// exactly, while what is not Loom's stays untouched. Drift the agent
// watches the kernel's notifications for (a deletion of Loom's, anything
// on the tunnel device, forwarding off) must be repaired long before the
// first resync. A Loom-tagged route added on another device is not among
// it (the agent watches its routes' deletions, not additions): another
// event may start a reconcile that finds it, but only the resync is sure
// to, so its deadline covers an interval.
func TestDriftIsRepaired(t *testing.T) {
	const resync = 20 * time.Second
	r := newRig(t, "--resync-interval", resync.String())
	nodes := startNodes(t, r, 3)
	n := nodes[0]
	pod := addPod(t, n, "p")
	other := addPod(t, nodes[1], "peer-pod")
	pods := []netip.Addr{pod.IP}
	waitKernelMatches(t, n, nodes, pods, 20*time.Second)

	// Someone else's route and nftables table: never touched.
	mustExec(t, n, "ip", "route", "add", "10.99.0.0/24", "via", "10.200.0.254", "dev", "eth0", "proto", "static")
	mustExec(t, n, "nft", "add", "table", "ip", "someone-else")
	peer, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	peerSubnet := netip.MustParsePrefix(peer.Node.Subnet)

	steps := []struct {
		name string
		cmds [][]string
		// repairedBy is what starts the repair: the kernel's announcement
		// of the change, or (when it announces nothing the agent watches
		// for) the periodic resync.
		repairedBy string
	}{
		{"VXLAN device deleted", [][]string{{"ip", "link", "del", "loom.1"}}, "announcement"},
		{"peer route deleted", [][]string{{"ip", "route", "del", peerSubnet.String()}}, "announcement"},
		{"peer neighbour deleted", [][]string{{"ip", "neigh", "del", peerSubnet.Addr().String(), "dev", "loom.1"}}, "announcement"},
		{"peer FDB entry deleted", [][]string{{"bridge", "fdb", "del", peer.Node.VTEPMAC, "dev", "loom.1", "dst", peer.Node.Underlay}}, "announcement"},
		{"pod route deleted", [][]string{{"ip", "route", "del", pod.IP.String() + "/32"}}, "announcement"},
		{"stale entries of an unknown peer planted", [][]string{
			{"ip", "neigh", "add", "10.244.250.0", "lladdr", "02:11:22:33:44:55", "dev", "loom.1", "nud", "permanent"},
			{"bridge", "fdb", "add", "02:11:22:33:44:55", "dev", "loom.1", "dst", "10.200.0.250", "self", "permanent"},
			{"ip", "route", "add", "10.244.250.0/24", "via", "10.244.250.0", "dev", "loom.1", "onlink"},
		}, "announcement"},
		{"stale Loom route for a gone pod planted", [][]string{{"ip", "route", "add", "10.244.251.7/32", "dev", "eth0", "proto", "76"}}, "resync"},
		// What `sysctl --system` does with an /etc/sysctl.conf saying 0.
		{"IPv4 forwarding switched off", [][]string{{"sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"}}, "announcement"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for _, c := range s.cmds {
				mustExec(t, n, c[0], c[1:]...)
			}
			deadline := 8 * time.Second
			if s.repairedBy == "resync" {
				deadline += resync
			}
			waitKernelMatches(t, n, nodes, pods, deadline)
			waitAllReach(t, []*rig.Pod{pod, other}, 15*time.Second)
			if fwd := strings.TrimSpace(mustExec(t, n, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "1" {
				t.Fatalf("net.ipv4.ip_forward = %s", fwd)
			}
		})
	}
	if !strings.Contains(rig.Tail(n.LogPath(), wholeLog), "IPv4 forwarding was off") {
		t.Fatal("turning IPv4 forwarding back on was not logged")
	}
	if out, _ := n.Exec("ip", "route", "show", "10.99.0.0/24"); !strings.Contains(out, "10.200.0.254") {
		t.Fatal("a route that is not Loom's was removed")
	}
	if _, err := n.Exec("nft", "list", "table", "ip", "someone-else"); err != nil {
		t.Fatal("an nftables table that is not Loom's was removed")
	}
	// Loom's own table removed by hand comes back on the next resync.
	mustExec(t, n, "nft", "delete", "table", "ip", "loom")
	if err := rig.Eventually(45*time.Second, func() error {
		_, err := n.Exec("nft", "list", "table", "ip", "loom")
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, n *rig.Node, name string, args ...string) string {
	t.Helper()
	// A netlink dump that changed under iproute2 (pods come and go while a
	// test reads) is printed with a warning and may be incomplete: read it
	// again. Only dumps print it, so commands that change state run once.
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, err := n.Exec(name, args...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "Dump was interrupted") || time.Now().After(deadline) {
			return out
		}
	}
}

// TestFirewallTamperingIsRepairedAtOnce: `nft flush ruleset` (what the
// nftables service runs on every reload) takes Loom's table, and with it
// masquerade, anti-spoofing and the VXLAN guard; `nft flush table` empties
// it and leaves it in place; a rule added to one of its chains can open
// what it closes. The agent must write the table back at once, not at its
// next resync (an hour away here; and a resync only looks for the table).
// Pods come after: gossip about them would make the agent reconcile (and
// so repair a removed table) whatever it watches.
func TestFirewallTamperingIsRepairedAtOnce(t *testing.T) {
	r := newRig(t, "--resync-interval", "1h")
	nodes := startNodes(t, r, 2)
	n := nodes[0]
	list := func() (string, error) { return listLoomTable(n) }
	before, err := list()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(before, "chain forward {") || !strings.Contains(before, nodes[1].Addr.String()) {
		t.Fatalf("Loom's table lacks the forward chain or the peer's address:\n%s", before)
	}
	intact := func() (string, error) {
		out, err := list()
		if err == nil && out != before {
			err = fmt.Errorf("Loom's table is not as Loom wrote it:\n%s\n--- want ---\n%s", out, before)
		}
		return out, err
	}
	for _, tamper := range [][]string{
		{"nft", "flush", "ruleset"},
		// Again: the first may still meet a reconcile for the nodes' own
		// gossip of joining.
		{"nft", "flush", "ruleset"},
		{"nft", "flush", "table", "ip", "loom"},
		{"nft", "add", "rule", "ip", "loom", "forward", "counter", "accept", "comment", `"tampered"`},
	} {
		mustExec(t, n, tamper[0], tamper[1:]...)
		if err := rig.Eventually(10*time.Second, func() error { _, err := intact(); return err }); err != nil {
			t.Fatalf("after %v: %v", tamper, err)
		}
	}
	// Loom's own writes must not look like someone else's: left alone,
	// the agent has no reason to reconcile (its resync is an hour away),
	// where mistaking its own rewrite for tampering rewrites in a loop.
	runs := func() float64 {
		v, _ := getMetric(t, n, "loom_reconcile_runs_total", "")
		return v
	}
	quiet := runs()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if now := runs(); now > quiet+2 {
			t.Fatalf("%v reconciles within 3 s of an idle fabric: the agent rewrites its own table in a loop", now-quiet)
		}
	}
	waitAllReach(t, []*rig.Pod{addPod(t, n, "a"), addPod(t, nodes[1], "b")}, 30*time.Second)
}

// TestDriftRepairOutlivesANotificationFlood: the kernel ends a
// notification subscription whose reader falls behind (ENOBUFS), and the
// netlink libraries' readers stop there for good. A node busy enough to
// stall loomd while many routes change, or a single nftables batch of a
// few thousand set elements (kube-proxy's sets, a large policy), was
// enough: from then on drift went unnoticed until the periodic resync (an
// hour away here).
func TestDriftRepairOutlivesANotificationFlood(t *testing.T) {
	r := newRig(t, "--resync-interval", "1h")
	nodes := startNodes(t, r, 2)
	n := nodes[0]
	peer, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	peerRoute := netip.MustParsePrefix(peer.Node.Subnet).String()
	dir := t.TempDir()

	// Route notifications pile up while loomd is stopped: far more than
	// its subscriptions' buffers hold.
	floodWhileStopped(t, n, writeRouteFlood(t, dir))
	waitLogged(t, n, "kernel change notifications lost", 10*time.Second)
	mustExec(t, n, "ip", "route", "del", peerRoute)
	if err := rig.Eventually(8*time.Second, func() error {
		if out, _ := n.Exec("ip", "route", "show", peerRoute); !strings.Contains(out, "loom.1") {
			return fmt.Errorf("the route to %s deleted after the flood is not back", peerRoute)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Someone else's nftables batch of 20,000 set elements, written while
	// loomd runs: each element is a notification to every monitor.
	var set strings.Builder
	set.WriteString("table ip someone-else {\n\tset big {\n\t\ttype ipv4_addr\n\t\telements = { ")
	for i := range 20000 {
		if i > 0 {
			set.WriteString(", ")
		}
		fmt.Fprintf(&set, "10.101.%d.%d", i>>8, i&255)
	}
	set.WriteString(" }\n\t}\n}\n")
	setBatch := filepath.Join(dir, "set.nft")
	if err := os.WriteFile(setBatch, []byte(set.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	written, err := listLoomTable(n)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, n, "nft", "-f", setBatch)
	// Emptied, not deleted: a reconcile for any other reason finds a
	// missing table, but only the watcher sees an emptied one.
	mustExec(t, n, "nft", "flush", "table", "ip", "loom")
	if err := rig.Eventually(10*time.Second, func() error {
		if now, err := listLoomTable(n); err != nil || now != written {
			return fmt.Errorf("Loom's table, emptied after a large nftables batch, is not as it was: %v\n%s", err, now)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, n, "a"), addPod(t, nodes[1], "b")}, 30*time.Second)
}

// writeRouteFlood writes an `ip -batch` file into dir that adds 20,000
// routes on a veth of its own and deletes the veth (and so the routes).
func writeRouteFlood(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("link add flood0 type veth peer name flood1\nlink set flood0 up\nlink set flood1 up\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "route add 10.100.%d.%d/32 dev flood0 proto static\n", i>>8, i&255)
	}
	b.WriteString("link del flood0\n")
	path := filepath.Join(dir, "route-flood")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// floodWhileStopped runs the batch on n while its agent is stopped
// (SIGSTOP), so the kernel's notifications of it pile up unread.
func floodWhileStopped(t *testing.T, n *rig.Node, batch string) {
	t.Helper()
	pid := n.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, floodErr := n.Exec("ip", "-batch", batch)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if floodErr != nil {
		t.Fatal(floodErr)
	}
}

var nftCounters = regexp.MustCompile(`packets \d+ bytes \d+`)

// listLoomTable lists Loom's IPv4 nftables table on n, its counters
// blanked so that two listings compare equal while traffic flows.
func listLoomTable(n *rig.Node) (string, error) {
	out, err := n.Exec("nft", "list", "table", "ip", "loom")
	return nftCounters.ReplaceAllString(out, "packets - bytes -"), err
}

// TestCNIConfigIsRestored: the conflist is loomd's. Removed (a reset, a
// tool that purges the directory) or changed by something else, it is
// written again, byte for byte, by the next resync, and counted as drift.
func TestCNIConfigIsRestored(t *testing.T) {
	r := newRig(t, "--resync-interval", "2s")
	n := startNodes(t, r, 1)[0]
	path := filepath.Join(n.ConfDir, "10-loom.conflist")
	written, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tamper := range []struct {
		name string
		do   func() error
	}{
		{"removed", func() error { return os.Remove(path) }},
		{"changed", func() error {
			return os.WriteFile(path, []byte(`{"cniVersion":"1.0.0","name":"loom","plugins":[]}`), 0o644)
		}},
	} {
		if err := tamper.do(); err != nil {
			t.Fatal(err)
		}
		if err := rig.Eventually(15*time.Second, func() error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if string(b) != string(written) {
				return fmt.Errorf("the conflist holds %q", b)
			}
			return nil
		}); err != nil {
			t.Fatalf("conflist %s: %v", tamper.name, err)
		}
	}
	if c := strings.Count(rig.Tail(n.LogPath(), wholeLog), "CNI config was removed or changed by something else; restored"); c != 2 {
		t.Errorf("the log says %d times that the conflist was restored, want 2", c)
	}
	_, metrics := getIn(t, n.NS, rig.AgentHTTP+"/metrics")
	if v, _ := rig.MetricValue(metrics, "loom_drift_repaired_total", `kind="cni_config"`); v != 2 {
		t.Errorf(`loom_drift_repaired_total{kind="cni_config"} = %v, want 2`, v)
	}
}
