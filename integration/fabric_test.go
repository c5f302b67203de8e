package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
)

// TestFabric stands up three nodes with two pods each and proves the
// Kubernetes network model over Loom, then adds a fourth node.
func TestFabric(t *testing.T) {
	// Pods are kept off their nodes' own ports unless allowed: the no-NAT
	// check towards a node uses port 8082.
	r := newRig(t, "--allow-pod-to-host", "tcp/8082")
	nodes := startNodes(t, r, 3)
	var pods []*rig.Pod
	for _, n := range nodes {
		for j := 1; j <= 2; j++ {
			pods = append(pods, addPod(t, n, fmt.Sprintf("%s-pod%d", n.Name, j)))
		}
	}

	t.Run("distinct subnets and pod addresses inside them", func(t *testing.T) {
		var subnets []netip.Prefix
		for _, n := range nodes {
			st, err := n.Status()
			if err != nil {
				t.Fatal(err)
			}
			s := netip.MustParsePrefix(st.Node.Subnet)
			for _, o := range subnets {
				if o.Overlaps(s) {
					t.Fatalf("subnets %s and %s overlap", o, s)
				}
			}
			subnets = append(subnets, s)
			for _, p := range pods {
				if p.Node == n && !s.Contains(p.IP) {
					t.Fatalf("pod %s has %s outside its node's subnet %s", p.Name, p.IP, s)
				}
			}
		}
	})

	t.Run("all 30 ordered pod pairs ping", func(t *testing.T) {
		waitAllReach(t, pods, 30*time.Second)
	})

	t.Run("no NAT between pods", func(t *testing.T) {
		client, server := pods[0], pods[2] // node1 -> node2
		l := listenIn(t, server.NS, net.JoinHostPort(server.IP.String(), "8080"))
		seen := peerAddrSeen(t, l, func() error { return dialFrom(client.NS, l.Addr().String()) })
		if seen != client.IP {
			t.Fatalf("server pod saw %s, want the client pod's own %s", seen, client.IP)
		}
	})

	t.Run("node reaches remote pod with its own address", func(t *testing.T) {
		nodeOverlay := overlayAddr(t, nodes[0])
		server := pods[4] // on node3
		l := listenIn(t, server.NS, net.JoinHostPort(server.IP.String(), "8081"))
		seen := peerAddrSeen(t, l, func() error { return dialFrom(nodes[0].NS, l.Addr().String()) })
		if seen != nodeOverlay {
			t.Fatalf("pod saw node1 as %s, want node1's own overlay address %s", seen, nodeOverlay)
		}
		if err := rig.Ping(nodes[0].NS, server.IP); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pod reaches remote node without NAT", func(t *testing.T) {
		client := pods[0]
		l := listenIn(t, nodes[1].NS, net.JoinHostPort(nodes[1].Addr.String(), "8082"))
		seen := peerAddrSeen(t, l, func() error { return dialFrom(client.NS, l.Addr().String()) })
		if seen != client.IP {
			t.Fatalf("node2 saw the pod as %s, want its own %s", seen, client.IP)
		}
		if err := rig.Ping(client.NS, nodes[2].Addr); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pod traffic to the outside is masqueraded to the node", func(t *testing.T) {
		outside, err := r.AddNode("outside")
		if err != nil {
			t.Fatal(err)
		}
		client := pods[2] // on node2
		l := listenIn(t, outside.NS, net.JoinHostPort(outside.Addr.String(), "8083"))
		seen := peerAddrSeen(t, l, func() error { return dialFrom(client.NS, l.Addr().String()) })
		if seen != nodes[1].Addr {
			t.Fatalf("outside host saw %s, want node2's underlay address %s", seen, nodes[1].Addr)
		}
	})

	t.Run("localhost inside a pod and two containers sharing it", func(t *testing.T) {
		p := pods[1]
		l := listenIn(t, p.NS, "127.0.0.1:9090")
		seen := peerAddrSeen(t, l, func() error { return dialFrom(p.NS, "127.0.0.1:9090") })
		if seen != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("localhost peer = %s", seen)
		}
		// A second "container": a separate process joined to the pod's netns,
		// talking to the first over localhost and seeing the same eth0.
		got := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 64)
			n, _ := c.Read(b)
			got <- string(b[:n])
		}()
		if _, err := p.Exec("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090; echo from-second-container >&3"); err != nil {
			t.Fatal(err)
		}
		if msg := <-got; !strings.Contains(msg, "from-second-container") {
			t.Fatalf("first container read %q", msg)
		}
		out, err := p.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, p.IP.String()+"/32") {
			t.Fatalf("second container does not see eth0 with %s: %q %v", p.IP, out, err)
		}
	})

	t.Run("CHECK passes, DEL removes, DEL again succeeds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p := addPod(t, nodes[1], "short-lived")
		if err := p.Check(ctx); err != nil {
			t.Fatalf("CHECK of a healthy pod: %v", err)
		}
		cni, list, err := p.Node.CNI()
		if err != nil {
			t.Fatal(err)
		}
		alloc, err := nodes[1].Client().Get(ctx, api.PodRef{ContainerID: p.ContainerID, IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[1].Exec("ip", "link", "show", alloc.HostIf); err != nil {
			t.Fatalf("host veth %s of a live pod missing: %v", alloc.HostIf, err)
		}
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cni.DelNetworkList(ctx, list, p.RuntimeConf()); err != nil {
			t.Fatalf("second DEL (netns already gone): %v", err)
		}
		allocs, err := nodes[1].Client().Pods(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			if a.ContainerID == p.ContainerID {
				t.Fatalf("allocation of deleted pod still present: %+v", a)
			}
		}
		// The route goes with DEL; the veth is destroyed right after it.
		if out, _ := nodes[1].Exec("ip", "-4", "route", "show", p.IP.String()+"/32"); strings.TrimSpace(out) != "" {
			t.Fatalf("route to deleted pod left behind: %s", out)
		}
		if err := rig.Eventually(5*time.Second, func() error {
			if out, err := nodes[1].Exec("ip", "link", "show", alloc.HostIf); err == nil {
				return fmt.Errorf("host veth of deleted pod left behind: %s", out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a fourth node joins and is reached at once", func(t *testing.T) {
		n4 := startNodes(t, r, 1)[0]
		p := addPod(t, n4, "node4-pod1")
		waitAllReach(t, append(append([]*rig.Pod(nil), pods...), p), 30*time.Second)
	})
}

// TestDeadNodeIsWithdrawn stops a node's agent and removes the node: every
// peer's kernel loses its route, neighbour and FDB entries.
func TestDeadNodeIsWithdrawn(t *testing.T) {
	r := newRig(t, "--dead-node-grace", "1s")
	nodes := startNodes(t, r, 3)
	victim := nodes[2]
	st, err := victim.Status()
	if err != nil {
		t.Fatal(err)
	}
	subnet, mac := st.Node.Subnet, st.Node.VTEPMAC
	for _, n := range nodes[:2] {
		n := n
		if err := rig.Eventually(20*time.Second, func() error {
			if e := kernelEntries(t, n); !strings.Contains(e, subnet) || !strings.Contains(e, mac) {
				return fmt.Errorf("%s has no entries for %s yet:\n%s", n.Name, victim.Name, e)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	victim.Stop(syscall.SIGKILL)
	if _, err := rig.Run("ip", "netns", "del", victim.NS); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		n := n
		if err := rig.Eventually(30*time.Second, func() error {
			e := kernelEntries(t, n)
			if strings.Contains(e, subnet) || strings.Contains(e, mac) || strings.Contains(e, victim.Addr.String()) {
				return fmt.Errorf("%s still has entries for dead %s:\n%s", n.Name, victim.Name, e)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAgentRestartKeepsPods kills loomd with SIGKILL: the data plane keeps
// carrying traffic while it is down, and the restarted agent has the same
// subnet, VTEP MAC and pod addresses.
func TestAgentRestartKeepsPods(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)
	before, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}

	nodes[1].Stop(syscall.SIGKILL)
	// Agent down: traffic still flows.
	if err := rig.Ping(a.NS, b.IP); err != nil {
		t.Fatalf("traffic stopped while the agent was down: %v", err)
	}
	if err := nodes[1].Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Node.Subnet != before.Node.Subnet || after.Node.VTEPMAC != before.Node.VTEPMAC {
		t.Fatalf("after restart subnet/MAC = %s/%s, want %s/%s", after.Node.Subnet, after.Node.VTEPMAC, before.Node.Subnet, before.Node.VTEPMAC)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Check(ctx); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
	c := addPod(t, nodes[1], "c")
	if c.IP == b.IP {
		t.Fatalf("new pod got %s, the address of an existing pod", c.IP)
	}
	waitAllReach(t, []*rig.Pod{a, b, c}, 30*time.Second)
	if ka, err := nodes[0].Status(); err != nil || len(ka.Peers) != 1 || ka.Peers[0].State != "alive" {
		t.Fatalf("node1's view of node2 after restart: %+v %v", ka.Peers, err)
	}
}

// TestMixedUnderlayMTU: one node's underlay carries jumbo frames, the
// other's does not: its switch port drops larger frames. Each node's pods
// run at its own MTU; the jumbo node's route to the other's pods carries
// the smaller MTU, so a large packet from its pod is fragmented, or
// answered with "fragmentation needed", before the tunnel instead of
// being lost on the underlay.
func TestMixedUnderlayMTU(t *testing.T) {
	r := newRig(t)
	jumbo, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, jumbo, "ip", "link", "set", "eth0", "mtu", "9000")
	if out, err := rig.Run("ip", "-n", r.Switch, "link", "set", jumbo.SwitchPort(), "mtu", "9000"); err != nil {
		t.Fatalf("switch port MTU: %v %s", err, out)
	}
	startReady(t, jumbo)
	small, err := r.AddNode("node2")
	if err != nil {
		t.Fatal(err)
	}
	// A hardware switch drops a frame larger than the port's MTU; the
	// rig's bridge would hand it to the veth regardless.
	for _, nft := range [][]string{
		{"add", "table", "bridge", "ports"},
		{"add", "chain", "bridge", "ports", "drops", "{ type filter hook forward priority 0; }"},
		{"add", "rule", "bridge", "ports", "drops", "oifname", small.SwitchPort(), "meta", "length", "gt", "1500", "counter", "drop"},
	} {
		if out, err := rig.Run("nsenter", append([]string{"--net=/run/netns/" + r.Switch, "nft"}, nft...)...); err != nil {
			t.Fatalf("nft %v: %v %s", nft, err, out)
		}
	}
	startReady(t, small, jumbo)
	waitConverged(t, r.Nodes())
	a, b := addPod(t, jumbo, "a"), addPod(t, small, "b")
	if out, _ := a.Exec("ip", "link", "show", "eth0"); !strings.Contains(out, " mtu 8950 ") {
		t.Fatalf("the jumbo node's pod is not at MTU 8950:\n%s", out)
	}
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)
	st, err := small.Status()
	if err != nil {
		t.Fatal(err)
	}
	if seen, err := jumbo.Status(); err != nil || len(seen.Peers) != 1 || seen.Peers[0].MTU != 1450 {
		t.Fatalf("node1 does not show node2's MTU 1450: %+v %v", seen.Peers, err)
	}
	if out := mustExec(t, jumbo, "ip", "route", "show", st.Node.Subnet); !strings.Contains(out, "mtu 1450") {
		t.Fatalf("node1's route to node2's pods does not carry node2's MTU 1450:\n%s", out)
	}
	// Without DF the node fragments; with DF (-M want, as TCP and most UDP
	// sockets) the pod learns the path MTU from the node's answer and
	// fragments itself: either way big packets get through.
	for _, pmtu := range []string{"dont", "want"} {
		if err := rig.Eventually(20*time.Second, func() error {
			// The first packet with DF may be answered by the node only.
			out, _ := a.Exec("ping", "-c", "3", "-i", "0.2", "-W", "1", "-M", pmtu, "-s", "4000", b.IP.String())
			if !strings.Contains(out, "bytes from "+b.IP.String()) {
				return fmt.Errorf("ping -M %s -s 4000: no reply\n%s", pmtu, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := b.Exec("ping", "-c", "2", "-W", "1", "-s", "4000", a.IP.String()); err != nil {
		t.Fatalf("from the small node's pod: %v\n%s", err, out)
	}
}
