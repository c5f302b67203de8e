package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestDirectRoutingMixedCluster runs --direct-routing on three nodes: two
// share the switch and route to each other without encapsulation, the
// third sits behind a router and is reached over VXLAN. All pods reach all
// pods.
func TestDirectRoutingMixedCluster(t *testing.T) {
	r := newRig(t, "--direct-routing")
	nodes := startNodes(t, r, 2)
	far := addRoutedPeer(t, r, nodes)
	var pods []*rig.Pod
	for _, n := range append(nodes, far) {
		pods = append(pods, addPod(t, n, n.Name+"-pod"))
	}
	waitAllReach(t, pods, 30*time.Second)

	st2, _ := nodes[1].Status()
	if out := mustExec(t, nodes[0], "ip", "-4", "route", "show", st2.Node.Subnet); !strings.Contains(out, "via "+nodes[1].Addr.String()+" dev eth0") {
		t.Fatalf("node2 shares node1's segment and should be routed directly, got: %s", out)
	}
	assertOverVXLAN(t, nodes[0], far)
	if out := mustExec(t, nodes[0], "bridge", "fdb", "show", "dev", "loom.1"); strings.Contains(out, nodes[1].Addr.String()) {
		t.Fatalf("VXLAN FDB should hold only the routed node:\n%s", out)
	}
}

// addRoutedPeer starts a node behind the rig's router, joined to the
// fabric of nodes, and waits until all of them agree.
func addRoutedPeer(t *testing.T, r *rig.Rig, nodes []*rig.Node) *rig.Node {
	t.Helper()
	far, err := r.AddRoutedNode("node3")
	if err != nil {
		t.Fatal(err)
	}
	startReady(t, far, nodes[0])
	waitConverged(t, append(append([]*rig.Node(nil), nodes...), far))
	return far
}

// assertOverVXLAN checks that n reaches peer's pods over VXLAN: the route
// to peer's subnet goes through the overlay device, whose FDB sends to
// peer's underlay address.
func assertOverVXLAN(t *testing.T, n, peer *rig.Node) {
	t.Helper()
	st, err := peer.Status()
	if err != nil {
		t.Fatal(err)
	}
	if out := mustExec(t, n, "ip", "-4", "route", "show", st.Node.Subnet); !strings.Contains(out, "dev loom.1") {
		t.Fatalf("%s is behind a router and should be reached over VXLAN, got: %s", peer.Name, out)
	}
	if out := mustExec(t, n, "bridge", "fdb", "show", "dev", "loom.1"); !strings.Contains(out, "dst "+peer.Addr.String()+" ") {
		t.Fatalf("no FDB entry to %s's underlay address %s:\n%s", peer.Name, peer.Addr, out)
	}
}

// TestDirectRoutingIPv6 runs --direct-routing over an IPv6 underlay: a
// peer on the segment gets an IPv4 route through its IPv6 address (no
// tunnel, no FDB entry), pods reach each other over it, and the periodic
// resync finds the route as it wants it rather than writing it again. A
// peer behind a router is reached over VXLAN, as over IPv4.
func TestDirectRoutingIPv6(t *testing.T) {
	r := newRigWith(t, rig.Options{IPv6Underlay: true, AgentArgs: []string{"--direct-routing", "--resync-interval", "1s"}})
	nodes := startNodes(t, r, 2)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")}
	waitAllReach(t, pods, 30*time.Second)
	st2, _ := nodes[1].Status()
	if out := mustExec(t, nodes[0], "ip", "-4", "route", "show", st2.Node.Subnet); !strings.Contains(out, "via inet6 "+nodes[1].Addr.String()+" dev eth0") {
		t.Fatalf("node2 shares node1's segment and should be routed through its IPv6 address, got: %s", out)
	}
	if out := mustExec(t, nodes[0], "bridge", "fdb", "show", "dev", "loom.1"); strings.Contains(out, nodes[1].Addr.String()) {
		t.Fatalf("a directly routed peer needs no FDB entry:\n%s", out)
	}
	metric := func(name, match string) float64 { return mustMetric(t, nodes[0], name, match) }
	drift := metric("loom_drift_repaired_total", `kind="route"`)
	resyncs := metric("loom_reconcile_runs_total", `reason="resync"`)
	if err := rig.Eventually(15*time.Second, func() error {
		if n := metric("loom_reconcile_runs_total", `reason="resync"`); n < resyncs+2 {
			return fmt.Errorf("%v resyncs so far, want 2", n-resyncs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if now := metric("loom_drift_repaired_total", `kind="route"`); now != drift {
		t.Fatalf("resyncs rewrote %v routes nobody touched: the reconciler does not recognise its own route through an IPv6 next hop", now-drift)
	}

	// A third node behind a router is not on the segment: it is reached
	// over VXLAN through its IPv6 address, and all pods reach all pods.
	far := addRoutedPeer(t, r, nodes)
	waitAllReach(t, append(pods, addPod(t, far, "c")), 30*time.Second)
	assertOverVXLAN(t, nodes[0], far)
}
