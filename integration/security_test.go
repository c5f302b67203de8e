package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
)

// vxlanPacket builds a VXLAN payload carrying an Ethernet frame with an
// IPv4/UDP datagram from src to dst:port, as a host on the underlay would
// forge it. The caller sends it to the node's VXLAN port.
func vxlanPacket(vni uint32, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	udpLen := 8 + len(payload)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	eth := append(append(append([]byte{}, dstMAC...), 0x02, 0xde, 0xad, 0xbe, 0xef, 0x01), 0x08, 0x00)
	vx := make([]byte, 8)
	vx[0] = 0x08
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	out := append(vx, eth...)
	out = append(out, ip...)
	out = append(out, udp...)
	return append(out, payload...)
}

func sendUDPFrom(t *testing.T, nsName string, to string, b []byte) {
	t.Helper()
	err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		c, err := net.Dial("udp", to)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVXLANIngressOnlyFromPeers forges VXLAN packets with the right VNI and
// the node's VTEP MAC towards a pod: from a member node they arrive (the
// control that shows the packet is good), from a host on the underlay that
// is not a member they never reach the pod, and the drop is counted.
func TestVXLANIngressOnlyFromPeers(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	outsider, err := r.AddNode("outsider")
	if err != nil {
		t.Fatal(err)
	}
	assertVXLANOnlyFromPeers(t, nodes, outsider)
}

// assertVXLANOnlyFromPeers forges VXLAN packets to a pod on nodes[0]: from
// nodes[1] (a member) one must arrive, from outsider (a host on the
// underlay running no agent) none may, and their drops must be counted.
func assertVXLANOnlyFromPeers(t *testing.T, nodes []*rig.Node, outsider *rig.Node) {
	t.Helper()
	pod := addPod(t, nodes[0], "target")
	st, _ := nodes[0].Status()
	mac, _ := net.ParseMAC(st.Node.VTEPMAC)
	peerSt, _ := nodes[1].Status()
	fakeSrc := netip.MustParsePrefix(peerSt.Node.Subnet).Addr().Next().Next() // "a pod on node2"

	received := receiveUDPIn(t, pod.NS, ":9999")
	to := net.JoinHostPort(nodes[0].Addr.String(), "4789")
	// Control: the same forgery from a member node is decapsulated.
	if err := rig.Eventually(10*time.Second, func() error {
		sendUDPFrom(t, nodes[1].NS, to, vxlanPacket(1, mac, fakeSrc, pod.IP, 9999, []byte("from-peer")))
		select {
		case m := <-received:
			if m == "from-peer" {
				return nil
			}
			return fmt.Errorf("unexpected %q", m)
		case <-time.After(500 * time.Millisecond):
			return fmt.Errorf("forged packet from a peer did not arrive: the test packet is wrong")
		}
	}); err != nil {
		t.Fatal(err)
	}
	before := droppedIn(t, nodes[0], "vxlan-ingress")
	for i := 0; i < 5; i++ {
		sendUDPFrom(t, outsider.NS, to, vxlanPacket(1, mac, fakeSrc, pod.IP, 9999, []byte("injected")))
	}
	if err := rig.Eventually(10*time.Second, func() error {
		if n := droppedIn(t, nodes[0], "vxlan-ingress"); n < before+5 {
			return fmt.Errorf("vxlan-ingress dropped %v, want at least %v", n, before+5)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The drops are counted; nothing may have reached the pod meanwhile.
	select {
	case m := <-received:
		t.Fatalf("pod received %q from a non-member", m)
	default:
	}
}

// receiveUDPIn listens on addr inside a namespace for the rest of the test
// and delivers every datagram's payload.
func receiveUDPIn(t *testing.T, nsName, addr string) <-chan string {
	t.Helper()
	var l net.PacketConn
	if err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		var err error
		l, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 64)
	go func() {
		buf := make([]byte, 256)
		for {
			n, _, err := l.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	return got
}

// droppedIn reads loom_firewall_dropped_packets_total for one chain.
func droppedIn(t *testing.T, n *rig.Node, chain string) float64 {
	t.Helper()
	v, _ := getMetric(t, n, "loom_firewall_dropped_packets_total", `chain="`+chain+`"`)
	return v
}

// TestPodCannotSpoofItsSource: a pod that takes another address cannot
// reach other pods with it; with its own it can. Both anti-spoofing modes.
func TestPodCannotSpoofItsSource(t *testing.T) {
	for _, mode := range []string{"nftables", "rp_filter"} {
		t.Run(mode, func(t *testing.T) { testPodCannotSpoof(t, mode) })
	}
}

func testPodCannotSpoof(t *testing.T, mode string) {
	r := newRig(t, "--pod-antispoof", mode)
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 20*time.Second)
	spoofed := a.IP.Next().Next().Next().Next().Next() // an address of node1's subnet, not a's
	if _, err := a.Exec("ip", "addr", "add", spoofed.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	// The receiver is the judge: a datagram with the spoofed source must
	// never arrive, one from the pod's own address must.
	got := receiveUDPIn(t, b.NS, ":9998")
	sendFrom := func(src netip.Addr, msg string) {
		t.Helper()
		if err := ns.WithNetNSPath("/run/netns/"+a.NS, func(ns.NetNS) error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: b.IP.AsSlice(), Port: 9998})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(msg))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// expectOnly sends three datagrams from spoofed, then from genuine
	// until one arrives: by then any spoofed one that got through has.
	expectOnly := func(genuine, spoofed netip.Addr) {
		t.Helper()
		before := droppedIn(t, nodes[0], "pod-antispoof")
		for i := 0; i < 3; i++ {
			sendFrom(spoofed, "spoofed")
		}
		spoofedArrived := ""
		if err := rig.Eventually(10*time.Second, func() error {
			sendFrom(genuine, "genuine")
			for {
				select {
				case m := <-got:
					if m == "spoofed" {
						spoofedArrived = m
						continue
					}
					return nil
				case <-time.After(300 * time.Millisecond):
					return fmt.Errorf("datagram from the pod's own address did not arrive")
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if spoofedArrived != "" {
			t.Fatalf("b received %q from %s: spoofing got through", spoofedArrived, spoofed)
		}
		if mode == "nftables" {
			if n := droppedIn(t, nodes[0], "pod-antispoof"); n < before+3 {
				t.Fatalf("spoofed packets not counted: %v -> %v", before, n)
			}
		}
	}
	expectOnly(a.IP, spoofed)

	// The same attachment deleted and added again with another address
	// must not keep its old one: the old address is now another pod's.
	ctx := context.Background()
	cni, list, err := nodes[0].CNI()
	if err != nil {
		t.Fatal(err)
	}
	if err := cni.DelNetworkList(ctx, list, a.RuntimeConf()); err != nil {
		t.Fatal(err)
	}
	old := a.IP
	addPod(t, nodes[0], "takes-the-old-address")
	if err := a.Add(ctx); err != nil {
		t.Fatal(err)
	}
	if a.IP == old {
		t.Fatalf("re-added pod got its old address %s again; the test needs another", old)
	}
	if _, err := a.Exec("ip", "addr", "add", old.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	expectOnly(a.IP, old)
}

// TestPodsKeptOffHostPorts: pods reach their node with ICMP and on ports
// the operator allowed, never the agent's gossip port or anything else.
func TestPodsKeptOffHostPorts(t *testing.T) {
	r := newRig(t, "--allow-pod-to-host", "tcp/8443")
	nodes := startNodes(t, r, 2)
	p := addPod(t, nodes[0], "p")
	serveIn(t, nodes[0].NS, "0.0.0.0:8443")
	listenIn(t, nodes[0].NS, "0.0.0.0:8444") // listening, yet out of pods' reach
	for _, target := range []netip.Addr{nodes[0].Addr, nodes[1].Addr} {
		if err := rig.Ping(p.NS, target); err != nil {
			t.Fatalf("ICMP to node %s: %v", target, err)
		}
	}
	if err := dialFrom(p.NS, net.JoinHostPort(nodes[0].Addr.String(), "8443")); err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	for _, port := range []string{"7946", "8444"} {
		if err := dialFrom(p.NS, net.JoinHostPort(nodes[0].Addr.String(), port)); err == nil {
			t.Fatalf("pod reached its node's port %s", port)
		}
	}
	// A pod on another node is kept off this node's gossip port too.
	q := addPod(t, nodes[1], "q")
	if err := dialFrom(q.NS, net.JoinHostPort(nodes[0].Addr.String(), "7946")); err == nil {
		t.Fatal("a remote pod reached node1's gossip port")
	}
	// The node itself still reaches its pods (replies pass).
	l := listenIn(t, p.NS, net.JoinHostPort(p.IP.String(), "8080"))
	if seen := peerAddrSeen(t, l, func() error { return dialFrom(nodes[0].NS, l.Addr().String()) }); !seen.IsValid() {
		t.Fatal("node could not reach its pod")
	}
}

// TestRogueAgentsAreIgnored: agents with the wrong key, or none, never
// appear in any peer's membership, lease table or kernel; the rejections
// are counted.
func TestRogueAgentsAreIgnored(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	otherKey := filepath.Join(r.Dir, "other.key")
	if err := os.WriteFile(otherKey, []byte("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong, err := r.AddNode("rogue-key", "--gossip-key-file", otherKey)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := r.AddNode("rogue-plain")
	if err != nil {
		t.Fatal(err)
	}
	// The wrong key replaces the rig's (a later --gossip-key-file wins);
	// the plain rogue drops the key and opts out of encryption.
	if err := wrong.Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := startWithout(plain, nodes[0], "--gossip-key-file", "--insecure-gossip"); err != nil {
		t.Fatal(err)
	}
	before, _ := getMetric(t, nodes[0], "loom_gossip_key_failures_total", "")
	if err := rig.Eventually(20*time.Second, func() error {
		v, _ := getMetric(t, nodes[0], "loom_gossip_key_failures_total", "")
		if v < before+2 {
			return fmt.Errorf("key failures %v, want the rogues' attempts counted", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if strings.HasPrefix(p.Name, "rogue") {
				t.Fatalf("%s lists rogue %s", n.Name, p.Name)
			}
		}
		out := mustExec(t, n, "ip", "-4", "neigh", "show", "dev", "loom.1") + mustExec(t, n, "bridge", "fdb", "show", "dev", "loom.1")
		for _, rg := range []*rig.Node{wrong, plain} {
			if strings.Contains(out, rg.Addr.String()) {
				t.Fatalf("%s's kernel has an entry for rogue %s:\n%s", n.Name, rg.Name, out)
			}
		}
		leases, _ := n.Client().Subnets(context.Background())
		for _, l := range leases {
			if strings.HasPrefix(l.Owner, "rogue") {
				t.Fatalf("%s's lease table holds rogue %s", n.Name, l.Owner)
			}
		}
	}
}

// mustMetric reads one of n's metrics (see rig.Node.Metric), failing the
// test if the agent does not serve its metrics.
func mustMetric(t *testing.T, n *rig.Node, name, match string) float64 {
	t.Helper()
	v, err := n.Metric(name, match)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func getMetric(t *testing.T, n *rig.Node, name, match string) (float64, bool) {
	t.Helper()
	_, body := getIn(t, n.NS, rig.AgentHTTP+"/metrics")
	return rig.MetricValue(body, name, match)
}

// startWithout starts n's agent with the rig's defaults minus the flags
// named in drop (with their values), plus extra flags.
func startWithout(n *rig.Node, join *rig.Node, dropFlag string, extra ...string) error {
	return n.StartWith(func(args []string) []string {
		var out []string
		for i := 0; i < len(args); i++ {
			if args[i] == dropFlag {
				i++
				continue
			}
			out = append(out, args[i])
		}
		return append(out, extra...)
	}, join)
}

// TestCorruptStateIsRefused: a state file that is not a database stops the
// agent with a clear error naming it and the recovery, instead of silently
// claiming a new subnet over pods that may still exist.
func TestCorruptStateIsRefused(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(n.Dir, "state")
	os.MkdirAll(state, 0o700)
	if err := os.WriteFile(filepath.Join(state, "loom.db"), []byte("this is not a bbolt database, it is garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+n.NS, "--", filepath.Join(binaries(t), "loomd"),
		"--node-name", "node1", "--iface", "eth0", "--insecure-gossip", "--state-dir", state,
		"--socket", filepath.Join(n.Dir, "s.sock"), "--cni-conf-dir", n.ConfDir, "--metrics-addr", "")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("loomd started on a corrupt state file")
	}
	msg := string(out)
	if !strings.Contains(msg, filepath.Join(state, "loom.db")) || !strings.Contains(msg, "move it aside") {
		t.Fatalf("error does not name the file and the recovery: %s", msg)
	}
	if _, err := os.Stat(filepath.Join(n.ConfDir, "10-loom.conflist")); err == nil {
		t.Fatal("a conflist was written")
	}
}

// TestUnderlayAllowList: nodes started with --underlay-cidrs ignore a
// node (holding the key) whose underlay address is outside it: it never
// enters their membership view or kernel, while they reach each other.
// The fabric runs the wan gossip profile, as a mesh across clouds would.
func TestUnderlayAllowList(t *testing.T) {
	r := newRig(t, "--gossip-profile", "wan")
	var listed []*rig.Node
	for _, name := range []string{"node1", "node2"} {
		n, err := r.AddNode(name, "--underlay-cidrs", "10.200.0.1/32,10.200.0.2/32")
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, n)
	}
	startReady(t, listed[0])
	startReady(t, listed[1], listed[0])
	outsider, err := r.AddNode("outsider")
	if err != nil {
		t.Fatal(err)
	}
	if outsider.Addr.String() != "10.200.0.3" {
		t.Fatalf("outsider at %s; the allow-list above assumes 10.200.0.3", outsider.Addr)
	}
	startReady(t, outsider, listed[0])
	a, b := addPod(t, listed[0], "a"), addPod(t, listed[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)
	waitLogged(t, listed[0], "outside --underlay-cidrs", 20*time.Second)
	for _, n := range listed {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Name == "outsider" {
				t.Fatalf("%s lists the outsider: %+v", n.Name, p)
			}
		}
		if out := kernelEntries(t, n); strings.Contains(out, outsider.Addr.String()) {
			t.Fatalf("%s's kernel has an entry for the outsider:\n%s", n.Name, out)
		}
	}
	c := addPod(t, outsider, "c")
	if err := rig.Ping(a.NS, c.IP); err == nil {
		t.Fatal("a pod on node1 reached the outsider's pod")
	}
}
