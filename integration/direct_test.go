package integration

import (
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
	far, err := r.AddRoutedNode("node3")
	if err != nil {
		t.Fatal(err)
	}
	startReady(t, far, nodes[0])
	all := append(nodes, far)
	waitConverged(t, all)
	var pods []*rig.Pod
	for _, n := range all {
		pods = append(pods, addPod(t, n, n.Name+"-pod"))
	}
	waitAllReach(t, pods, 30*time.Second)

	st2, _ := nodes[1].Status()
	st3, _ := far.Status()
	if out := mustExec(t, nodes[0], "ip", "-4", "route", "show", st2.Node.Subnet); !strings.Contains(out, "via "+nodes[1].Addr.String()+" dev eth0") {
		t.Fatalf("node2 shares node1's segment and should be routed directly, got: %s", out)
	}
	if out := mustExec(t, nodes[0], "ip", "-4", "route", "show", st3.Node.Subnet); !strings.Contains(out, "dev loom.1") {
		t.Fatalf("node3 is behind a router and should be reached over VXLAN, got: %s", out)
	}
	if out := mustExec(t, nodes[0], "bridge", "fdb", "show", "dev", "loom.1"); strings.Contains(out, nodes[1].Addr.String()) || !strings.Contains(out, far.Addr.String()) {
		t.Fatalf("VXLAN FDB should hold only the routed node:\n%s", out)
	}
}
