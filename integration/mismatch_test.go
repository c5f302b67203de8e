package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestMismatchedTunnelSettingsAreRefused: fabric-wide settings are flags
// on every node, so one node can be started with another --vxlan-port or
// --vni (a half-done rollout). Its packets and its peers' would be
// dropped on arrival; instead both sides refuse each other, say why in
// their status and log it, and the rest of the fabric is unaffected.
func TestMismatchedTunnelSettingsAreRefused(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	for _, odd := range [][]string{
		{"portnode", "--vxlan-port", "8472"},
		{"vninode", "--vni", "7"},
		{"cidrnode", "--cluster-cidr", "10.245.0.0/16"},
	} {
		n, err := r.AddNode(odd[0], odd[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		startReady(t, n, nodes[0])
	}
	all := r.Nodes()
	waitRefused(t, all[0], "portnode", "receives vxlan on port 8472, this node on 4789 (all nodes of a fabric need the same --vxlan-port)")
	waitRefused(t, all[2], "node1", "receives vxlan on port 4789, this node on 8472")
	waitRefused(t, all[0], "vninode", "runs VNI 7, this node 1 (all nodes of a fabric need the same --vni)")
	waitRefused(t, all[3], "node2", "runs VNI 1, this node 7")
	waitRefused(t, all[2], "vninode", "port 4789, this node on 8472")
	waitRefused(t, all[0], "cidrnode", "pod space 10.245.0.0/16 in /24 subnets, this node 10.244.0.0/16 in /24 (all nodes of a fabric need the same --cluster-cidr and --subnet-prefix)")
	waitRefused(t, all[4], "node1", "pod space 10.244.0.0/16 in /24 subnets, this node 10.245.0.0/16")
	if !strings.Contains(rig.Tail(all[0].LogPath(), wholeLog), "refusing peer") {
		t.Fatal("node1 did not log the refusal")
	}
	waitConverged(t, nodes)
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")}, 30*time.Second)
}

// waitRefused waits until n knows peer, has not programmed it, and gives a
// reason containing want.
func waitRefused(t *testing.T, n *rig.Node, peer, want string) {
	t.Helper()
	err := rig.Eventually(20*time.Second, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == peer {
				if p.Programmed || !strings.Contains(p.Reason, want) {
					return fmt.Errorf("%s on %s: programmed=%v reason=%q, want refused with %q", peer, n.Name, p.Programmed, p.Reason, want)
				}
				return nil
			}
		}
		return fmt.Errorf("%s does not know %s yet", n.Name, peer)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDuplicateNodeNameIsRefused: a node started under the name of a live
// node (a cloned machine keeps its hostname, the default --node-name)
// would be handed that node's subnet by the lease table and serve pods
// from it. It must stop before claiming anything, saying why, and leave
// the node that has the name alone.
func TestDuplicateNodeNameIsRefused(t *testing.T) {
	refusedBeside(t, "clone", func(*rig.Node) []string { return []string{"--node-name", "node2"} },
		func(owner *rig.Node) string {
			return `--node-name: "node2" is in use by a live node at ` + owner.Addr.String()
		})
}

// TestDuplicateUnderlayAddressIsRefused: a node that advertises the
// underlay address of a live node (a configuration copied with its
// --advertise-addr) would have peers send its pods' tunnel packets to that
// node, and be declared dead and alive again over and over, reserving and
// taking back its subnet. It must stop before claiming anything, naming
// the node that owns the address, and leave that node alone.
func TestDuplicateUnderlayAddressIsRefused(t *testing.T) {
	refusedBeside(t, "node3", func(owner *rig.Node) []string { return []string{"--advertise-addr", owner.Addr.String()} },
		func(owner *rig.Node) string {
			return fmt.Sprintf(`--advertise-addr: this node's underlay address %s is that of the live node "node2"`, owner.Addr)
		})
}

// refusedBeside starts two nodes, then a third named name with the
// arguments args gives for node2 (owner). The third must exit 2 logging
// what refused says, before it claims a subnet or writes a conflist, and
// node2 must go on as before.
func refusedBeside(t *testing.T, name string, args func(owner *rig.Node) []string, refused func(owner *rig.Node) string) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	owner := nodes[1]
	before, err := owner.Status()
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.AddNode(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StartWith(func(a []string) []string { return append(a, args(owner)...) }, nodes[0]); err != nil {
		t.Fatal(err)
	}
	code, err := n.WaitExit(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logged := rig.Tail(n.LogPath(), 40)
	if want := refused(owner); code != 2 || !strings.Contains(logged, want) {
		t.Fatalf("%s exited %d, want 2 saying %q:\n%s", name, code, want, logged)
	}
	if strings.Contains(logged, "lease claimed") {
		t.Fatalf("%s claimed a subnet before stopping:\n%s", name, logged)
	}
	if _, err := os.Stat(filepath.Join(n.ConfDir, "10-loom.conflist")); !os.IsNotExist(err) {
		t.Fatalf("%s wrote a CNI conflist (err %v): runtimes would have used it", name, err)
	}
	after, err := owner.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !after.Node.Ready || after.Node.Subnet != before.Node.Subnet || after.Node.Conflicts != 0 {
		t.Fatalf("%s was disturbed: before %+v, after %+v", owner.Name, before.Node, after.Node)
	}
	waitKernelMatches(t, nodes[0], nodes, nil, 10*time.Second)
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, owner, "b")}, 30*time.Second)
}

// TestForeignVXLANDeviceInTheWay: another overlay on the node (flannel set
// to port 4789, a leftover device) holds Loom's VNI and port, so the
// kernel refuses Loom's device with a bare "file exists". The node is not
// ready and says which device is in the way, logs it once rather than on
// every retry, and becomes ready by itself once the device is removed.
func TestForeignVXLANDeviceInTheWay(t *testing.T) {
	r := newRig(t)
	first := startNodes(t, r, 1)[0]
	n, err := r.AddNode("crowded")
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, n, "ip", "link", "add", "vxforeign", "type", "vxlan", "id", "1", "dstport", "4789", "dev", "eth0")
	mustExec(t, n, "ip", "link", "set", "vxforeign", "up")
	if err := n.Start(first); err != nil {
		t.Fatal(err)
	}
	const why = "VXLAN device vxforeign already uses VNI 1 on UDP port 4789"
	waitNotReady(t, n, why)
	// Let it retry a few times, then count what it said.
	retried := func() int { return strings.Count(rig.Tail(n.LogPath(), wholeLog), `"reconcile incomplete; retrying"`) }
	if err := rig.Eventually(30*time.Second, func() error {
		if c := retried(); c < 3 {
			return fmt.Errorf("%d failed reconciles logged so far", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	for _, line := range strings.Split(rig.Tail(n.LogPath(), wholeLog), "\n") {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, why) {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("the same failure was logged as a warning %d times, want once:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}

	mustExec(t, n, "ip", "link", "del", "vxforeign")
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rig.Tail(n.LogPath(), wholeLog), "reconcile complete again") {
		t.Fatal("recovery not logged")
	}
	waitAllReach(t, []*rig.Pod{addPod(t, first, "a"), addPod(t, n, "b")}, 30*time.Second)
}
