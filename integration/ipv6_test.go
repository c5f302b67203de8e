package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestIPv6Underlay runs a fabric over an underlay with IPv6 addresses
// only: the agents find it by themselves (no flag), gossip over it, the
// tunnel sends from and to the nodes' IPv6 addresses, the overlay's MTU
// leaves room for the 70 bytes VXLAN costs over IPv6, and the VXLAN port
// takes packets only from member nodes, the guard surviving its table's
// deletion.
func TestIPv6Underlay(t *testing.T) {
	r := newRigWith(t, rig.Options{IPv6Underlay: true})
	nodes := startNodes(t, r, 3)
	var pods []*rig.Pod
	for _, n := range nodes {
		if !n.Addr.Is6() {
			t.Fatalf("rig gave %s the address %s, not an IPv6 one", n.Name, n.Addr)
		}
		pods = append(pods, addPod(t, n, "p-"+n.Name))
	}
	waitAllReach(t, pods, 30*time.Second)

	for _, n := range nodes {
		dev := mustExec(t, n, "ip", "-d", "link", "show", "loom.1")
		if !strings.Contains(dev, "local "+n.Addr.String()+" ") || !strings.Contains(dev, " mtu 1430 ") {
			t.Errorf("%s: loom.1 does not send from %s at MTU 1430 (1500 - 70):\n%s", n.Name, n.Addr, dev)
		}
		if st, err := n.Status(); err != nil || st.Node.MTU != 1430 {
			t.Errorf("%s: status says MTU %d (%v), want 1430", n.Name, st.Node.MTU, err)
		}
		fdb := mustExec(t, n, "bridge", "fdb", "show", "dev", "loom.1")
		for _, peer := range nodes {
			if peer != n && !strings.Contains(fdb, "dst "+peer.Addr.String()+" ") {
				t.Errorf("%s: no FDB entry to %s's IPv6 address %s:\n%s", n.Name, peer.Name, peer.Addr, fdb)
			}
		}
	}
	// The largest packet the pods' MTU allows crosses the tunnel whole.
	if out, err := pods[0].Exec("ping", "-c", "1", "-W", "2", "-M", "do", "-s", fmt.Sprint(1430-28), pods[1].IP.String()); err != nil {
		t.Errorf("a full-size packet did not cross the IPv6 tunnel: %v\n%s", err, out)
	}

	outsider, err := r.AddNode("outsider")
	if err != nil {
		t.Fatal(err)
	}
	assertVXLANOnlyFromPeers(t, nodes, outsider)

	// The ip6 table holds the guard; deleted, it comes back at once.
	guard := func() error {
		out, err := nodes[0].Exec("nft", "list", "table", "ip6", "loom")
		if err != nil {
			return err
		}
		for _, peer := range nodes[1:] {
			if !strings.Contains(out, peer.Addr.String()) {
				return fmt.Errorf("the ip6 guard lacks %s's address %s:\n%s", peer.Name, peer.Addr, out)
			}
		}
		return nil
	}
	if err := guard(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, nodes[0], "nft", "delete", "table", "ip6", "loom")
	if err := rig.Eventually(10*time.Second, guard); err != nil {
		t.Fatalf("after the ip6 table was deleted: %v", err)
	}
}

// TestIPv6UnderlayWireGuard runs the WireGuard backend over an IPv6
// underlay: each peer's endpoint is its IPv6 address, and pods reach
// each other through the encrypted tunnels.
func TestIPv6UnderlayWireGuard(t *testing.T) {
	r := newRigWith(t, rig.Options{IPv6Underlay: true, AgentArgs: []string{"--backend", "wireguard"}})
	nodes := startNodes(t, r, 2)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")}
	waitAllReach(t, pods, 30*time.Second)
	if out, err := pods[0].Exec("ip", "link", "show", "eth0"); err != nil || !strings.Contains(out, " mtu 1420 ") {
		t.Errorf("pod MTU is not 1420 (1500 - WireGuard's 80): %v\n%s", err, out)
	}
	st, err := nodes[0].Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if !p.Programmed || p.Underlay != nodes[1].Addr.String() {
			t.Errorf("peer %+v: want node2 at %s, programmed", p, nodes[1].Addr)
		}
	}
}
