package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
)

// TestHitlessRestart pings between pods on two nodes at 100 packets/s while
// both agents are killed and restarted, then stopped with SIGTERM and
// restarted: not one packet may be lost.
func TestHitlessRestart(t *testing.T) { hitlessRestart(t, rig.Options{}) }

// TestHitlessRestartWireGuard is the same over the WireGuard backend,
// whose userspace device lives in a helper process the agent adopts.
func TestHitlessRestartWireGuard(t *testing.T) {
	hitlessRestart(t, rig.Options{AgentArgs: []string{"--backend", "wireguard"}})
}

// TestHitlessRestartIPv6 is the same over an IPv6 underlay: the agent
// must find the VXLAN device it made (sending from an IPv6 address) fit
// to keep, not make it anew.
func TestHitlessRestartIPv6(t *testing.T) { hitlessRestart(t, rig.Options{IPv6Underlay: true}) }

func hitlessRestart(t *testing.T, opts rig.Options) {
	r := newRigWith(t, opts)
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			// Let the ping get going (6 s at 100/s), then take both agents
			// down together.
			pings := startPings(t, a, b, 600)
			stopped := time.Now()
			for _, n := range nodes {
				n.Stop(sig)
			}
			for _, n := range nodes {
				if err := n.Start(nodes[0]); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range nodes {
				if err := n.WaitReady(30 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			ready := time.Now()
			if err := pings.losses(t); err != nil {
				t.Fatalf("packets lost across the restart (agents stopped at %s, all ready at %s): %v", stopped.Format(stampMicro), ready.Format(stampMicro), err)
			}
		})
	}
}

// TestRestartKeepsPeerNodesOnHostPorts: what a peer node sends from its
// overlay address is node traffic, not a pod's, so the pod-to-host filter
// (ICMP only by default) lets it through. A restarted agent that has not
// heard from that peer yet (its agent is down too) adopts the data plane
// until membership settles; it must not narrow the firewall meanwhile and
// treat the peer as a pod.
func TestRestartKeepsPeerNodesOnHostPorts(t *testing.T) {
	r := newRig(t, "--dead-node-grace", "1m")
	nodes := startNodes(t, r, 2)
	serveIn(t, nodes[0].NS, "0.0.0.0:8080")
	target := net.JoinHostPort(overlayAddr(t, nodes[0]).String(), "8080")
	if err := dialFrom(nodes[1].NS, target); err != nil {
		t.Fatalf("node2 to node1's overlay address: %v", err)
	}
	nodes[1].Stop(syscall.SIGKILL) // its data plane stays: node2 still routes to node1
	nodes[0].Stop(syscall.SIGTERM)
	if err := nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(nodes[1].NS, target); err != nil {
		t.Fatalf("node2 to node1's overlay address while node1 adopts its data plane: %v", err)
	}
	// Still adopting: node1 has not heard from node2, whose agent is down.
	if st, err := nodes[0].Status(); err != nil || len(st.Peers) != 0 && st.Peers[0].State == "alive" {
		t.Fatalf("node1 should not see node2 alive: %v %+v", err, st.Peers)
	}
}

// TestRemovePeerAndLeave: rmpeer refuses a live node and frees a dead one's
// subnet cluster-wide at once; leave takes a node out cleanly.
func TestRemovePeerAndLeave(t *testing.T) {
	// A long grace: without rmpeer the dead node's routes would stay an hour.
	r := newRig(t, "--dead-node-grace", "1h")
	nodes := startNodes(t, r, 3)
	ctl := func(n *rig.Node, args ...string) (string, error) {
		return rig.Run(filepath.Join(binaries(t), "loomctl"), append([]string{"--socket", n.Socket}, args...)...)
	}
	if out, err := ctl(nodes[0], "rmpeer", "node3"); err == nil || !strings.Contains(out, "alive") {
		t.Fatalf("rmpeer of a live node: %v %q, want a refusal saying it is alive", err, out)
	}
	victim, _ := nodes[2].Status()
	nodes[2].Stop(syscall.SIGKILL)
	if err := rig.Eventually(30*time.Second, func() error {
		st, err := nodes[0].Status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == "node3" && p.State != "dead" {
				return fmt.Errorf("node3 is %s", p.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out := kernelEntries(t, nodes[0]); !strings.Contains(out, victim.Node.Subnet) {
		t.Fatalf("within the grace period node1 should still route to node3:\n%s", out)
	}
	if out, err := ctl(nodes[0], "rmpeer", "node3"); err != nil || !strings.Contains(out, victim.Node.Subnet) {
		t.Fatalf("rmpeer node3: %v %q", err, out)
	}
	for _, n := range nodes[:2] {
		n := n
		if err := rig.Eventually(15*time.Second, func() error {
			if e := kernelEntries(t, n); strings.Contains(e, victim.Node.Subnet) || strings.Contains(e, victim.Node.VTEPMAC) {
				return fmt.Errorf("%s still routes to removed node3:\n%s", n.Name, e)
			}
			out, err := ctl(n, "subnets", "-o", "json")
			if err != nil {
				return err
			}
			if !regexp.MustCompile(`"subnet": "` + regexp.QuoteMeta(victim.Node.Subnet) + `",\s*"owner": "node3",\s*"state": "released"`).MatchString(out) {
				return fmt.Errorf("%s does not show node3's lease released:\n%s", n.Name, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// node2 leaves: its agent stops, its conflist and data plane go, node1
	// withdraws it at once and sees its lease released.
	leaver, _ := nodes[1].Status()
	if out, err := ctl(nodes[1], "leave"); err != nil {
		t.Fatalf("leave: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(nodes[1].ConfDir, "10-loom.conflist")); !os.IsNotExist(err) {
		t.Fatalf("conflist still present after leave: %v", err)
	}
	if _, err := nodes[1].Exec("ip", "link", "show", "loom.1"); err == nil {
		t.Fatal("VXLAN device still present after leave")
	}
	if err := rig.Eventually(10*time.Second, func() error {
		if e := kernelEntries(t, nodes[0]); strings.Contains(e, leaver.Node.Subnet) {
			return fmt.Errorf("node1 still routes to node2 after it left:\n%s", e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, _ := nodes[0].Status()
	for _, p := range st.Peers {
		if p.Name == "node2" && p.State != "left" {
			t.Fatalf("node1 sees node2 as %s, want left", p.State)
		}
	}
}

// TestNodeReturnsWithoutState: a node that died and comes back under the
// same name with an empty state dir (reinstalled) gets its subnet back.
func TestNodeReturnsWithoutState(t *testing.T) {
	r := newRig(t, "--dead-node-grace", "0s")
	nodes := startNodes(t, r, 3)
	before, _ := nodes[2].Status()
	nodes[2].Stop(syscall.SIGKILL)
	if err := rig.Eventually(30*time.Second, func() error {
		out, err := nodes[0].Client().Subnets(context.Background())
		if err != nil {
			return err
		}
		for _, l := range out {
			if l.Owner == "node3" && l.State == "reserved" {
				return nil
			}
		}
		return fmt.Errorf("node3's lease not reserved yet: %+v", out)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(nodes[2].Dir, "state")); err != nil {
		t.Fatal(err)
	}
	startReady(t, nodes[2], nodes[0])
	after, _ := nodes[2].Status()
	if after.Node.Subnet != before.Node.Subnet {
		t.Fatalf("returning node got %s, want its old %s", after.Node.Subnet, before.Node.Subnet)
	}
	waitKernelMatches(t, nodes[0], nodes, nil, 20*time.Second)
}

// TestNodeReturnsAtNewAddress: a node crashes and comes back at another
// underlay address (a new DHCP lease), its pods still in place, twice.
// Peers can take the new address only once memberlist has declared the old
// one dead; the returning node must then be taken back at once, not at its
// next full state sync (up to 10 s later, so two moves both within the
// bound by luck are unlikely). Afterwards the pods reach each other, and no
// FDB or firewall entry names an old address (which may be handed to a host
// that is not a member).
func TestNodeReturnsAtNewAddress(t *testing.T) {
	// memberlist takes the new address a second after the old one's death
	// (DeadNodeReclaimTime); the returning node pushes it every second.
	const takenWithin = 4 * time.Second
	r := newRig(t)
	nodes := startNodes(t, r, 3)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b"), addPod(t, nodes[2], "c")}
	waitAllReach(t, pods, 30*time.Second)

	mover := nodes[2]
	var old []netip.Addr
	for move := 1; move <= 2; move++ {
		mover.Stop(syscall.SIGKILL)
		was, err := r.Readdress(mover)
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, was)
		if err := mover.Start(nodes[0]); err != nil {
			t.Fatal(err)
		}
		dead, back := watchReturn(t, nodes[0], mover, 60*time.Second)
		t.Logf("move %d: node1 took %s at %s %s after declaring it dead at %s", move, mover.Name, mover.Addr, back.Sub(dead).Round(time.Millisecond), was)
		if back.Sub(dead) > takenWithin {
			t.Fatalf("move %d: node1 took %s at its new address %s after its old one was declared dead, want within %s",
				move, mover.Name, back.Sub(dead).Round(time.Millisecond), takenWithin)
		}
		waitAllReach(t, pods, 30*time.Second)
	}
	checkFollowedMove(t, nodes, pods, mover, old...)
}

// TestUnderlayAddressChangesUnderAgent: a running node's underlay address
// changes (a new DHCP lease). loomd sees it, starts again in place at the
// new address, and leaves gossip first, so peers take it back without
// waiting to declare the old address dead.
func TestUnderlayAddressChangesUnderAgent(t *testing.T) { underlayChangesUnderAgent(t, rig.Options{}) }

// TestUnderlayAddressChangesUnderAgentWireGuard is the same over the
// WireGuard backend, whose peers' endpoints must follow too.
func TestUnderlayAddressChangesUnderAgentWireGuard(t *testing.T) {
	underlayChangesUnderAgent(t, rig.Options{AgentArgs: []string{"--backend", "wireguard"}})
}

// TestUnderlayAddressChangesUnderAgentIPv6 is the same over an IPv6
// underlay, where the VXLAN guard's set is the ip6 table's.
func TestUnderlayAddressChangesUnderAgentIPv6(t *testing.T) {
	underlayChangesUnderAgent(t, rig.Options{IPv6Underlay: true})
}

func underlayChangesUnderAgent(t *testing.T, opts rig.Options) {
	r := newRigWith(t, opts)
	nodes := startNodes(t, r, 3)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b"), addPod(t, nodes[2], "c")}
	waitAllReach(t, pods, 30*time.Second)

	mover := nodes[2]
	pid := mover.Pid()
	old, err := r.Readdress(mover)
	if err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	if err := rig.Eventually(30*time.Second, func() error {
		st, err := nodes[0].Status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == mover.Name && p.State == "alive" && p.Underlay == mover.Addr.String() {
				return nil
			}
		}
		return fmt.Errorf("node1 does not hold %s alive at %s: %+v", mover.Name, mover.Addr, st.Peers)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("node1 took %s at %s %s after its address changed", mover.Name, mover.Addr, time.Since(moved).Round(time.Millisecond))
	if mover.Pid() != pid || !processRunning(pid) {
		t.Fatalf("loomd (pid %d) did not start again in place", pid)
	}
	logged, _ := os.ReadFile(mover.LogPath())
	if !regexp.MustCompile(`"msg":"loomd starting".*"underlay":"` + regexp.QuoteMeta(mover.Addr.String()) + `"`).Match(logged) {
		t.Fatalf("loomd did not start again at %s:\n%s", mover.Addr, rig.Tail(mover.LogPath(), 20))
	}
	if err := mover.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, pods, 30*time.Second)
	checkFollowedMove(t, nodes, pods, mover, old)
}

// TestUnderlayInterfaceRecreated: a network restart deletes the underlay
// interface and creates it again (a new index) with the same address. The
// kernel deletes the VXLAN device with its lower interface, and the old
// index cannot make it again: loomd must start again in place and rebuild
// it on the new interface, without peers noticing more than the gap.
func TestUnderlayInterfaceRecreated(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")}
	waitAllReach(t, pods, 30*time.Second)
	pid := nodes[1].Pid()
	if err := r.Replug(nodes[1]); err != nil {
		t.Fatal(err)
	}
	replugged := time.Now()
	waitAllReach(t, pods, 30*time.Second)
	t.Logf("pods reach each other %s after the interface came back", time.Since(replugged).Round(time.Millisecond))
	if nodes[1].Pid() != pid || !processRunning(pid) {
		t.Fatalf("loomd (pid %d) did not start again in place", pid)
	}
	if !strings.Contains(rig.Tail(nodes[1].LogPath(), 200), "underlay interface was created anew") {
		t.Fatalf("loomd did not say why it started again:\n%s", rig.Tail(nodes[1].LogPath(), 20))
	}
	if err := nodes[1].WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkFollowedMove(t, nodes, pods, nodes[1])
}

// TestUnderlayMTUChangeResizesOverlay: the underlay interface's MTU changes
// (jumbo frames turned off, or on). The overlay's MTU, derived from it,
// must follow: loomd starts again in place, the VXLAN device and the pods
// made afterwards get the new size, and the pods already there still
// reach each other.
func TestUnderlayMTUChangeResizesOverlay(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	pods := []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")}
	waitAllReach(t, pods, 30*time.Second)
	n := nodes[1]
	pid := n.Pid()
	mustExec(t, n, "ip", "link", "set", "eth0", "mtu", "1400")
	if err := rig.Eventually(30*time.Second, func() error {
		out, err := n.Exec("ip", "link", "show", "loom.1")
		if err != nil {
			return err
		}
		if !strings.Contains(out, " mtu 1350 ") {
			return fmt.Errorf("loom.1 is not at MTU 1350 (underlay 1400 - 50):\n%s", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n.Pid() != pid || !processRunning(pid) {
		t.Fatalf("loomd (pid %d) did not start again in place", pid)
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	fresh := addPod(t, n, "c")
	if out, err := fresh.Exec("ip", "link", "show", "eth0"); err != nil || !strings.Contains(out, " mtu 1350 ") {
		t.Fatalf("a pod made after the change is not at MTU 1350: %v\n%s", err, out)
	}
	// The peer's route to the shrunk node follows its new MTU.
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(20*time.Second, func() error {
		if out := mustExec(t, nodes[0], "ip", "route", "show", st.Node.Subnet); !strings.Contains(out, "mtu 1350") {
			return fmt.Errorf("node1's route to node2's pods does not carry its new MTU 1350:\n%s", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, append(pods, fresh), 30*time.Second)
}

// processRunning reports whether pid is a live process, not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// checkFollowedMove checks that every node's kernel holds what the fabric
// implies after mover changed address, and that no firewall lets one of
// its old addresses in (it may be handed to a host that is not a member).
func checkFollowedMove(t *testing.T, nodes []*rig.Node, pods []*rig.Pod, mover *rig.Node, old ...netip.Addr) {
	t.Helper()
	for _, n := range nodes {
		var local []netip.Addr
		for _, p := range pods {
			if p.Node == n {
				local = append(local, p.IP)
			}
		}
		waitKernelMatches(t, n, nodes, local, 20*time.Second)
		if n == mover {
			continue
		}
		set := mustExec(t, n, "nft", "list", "set", "ip", "loom", "nodes")
		if mover.Addr.Is6() {
			set = mustExec(t, n, "nft", "list", "set", "ip6", "loom", "nodes6")
		}
		for _, a := range old {
			if strings.Contains(set, a.String()) {
				t.Errorf("%s's firewall still lets %s's old address %s in:\n%s", n.Name, mover.Name, a, set)
			}
		}
		if !strings.Contains(set, mover.Addr.String()) {
			t.Errorf("%s's firewall lacks %s's address %s:\n%s", n.Name, mover.Name, mover.Addr, set)
		}
	}
}

// watchReturn follows, in n's status, a peer that came back at a new
// address: it returns when it first saw n hold the old entry dead (which
// memberlist keeps for at least a second) and when it first saw n hold
// the peer alive at its new address.
func watchReturn(t *testing.T, n, peer *rig.Node, timeout time.Duration) (dead, back time.Time) {
	t.Helper()
	var last api.PeerStatus
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Name != peer.Name {
				continue
			}
			last = p
			switch {
			case p.State == "dead" && dead.IsZero():
				dead = time.Now()
			case p.State == "alive" && p.Underlay == peer.Addr.String():
				if dead.IsZero() {
					t.Fatalf("%s took %s at %s without declaring its old address dead", n.Name, peer.Name, peer.Addr)
				}
				return dead, time.Now()
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("after %s %s has not taken %s at %s: last seen %+v", timeout, n.Name, peer.Name, peer.Addr, last)
	return
}

// TestCopiedStateDirClaimsAnew: a machine built from a disk image of a
// running node carries that node's --state-dir, lease included, under its
// own name. Started cut off from the fabric, it used to reuse the lease
// as its own (a node with a persisted lease serves without its peers) and
// route the other node's subnet; it must instead wait to claim a subnet
// of its own, and take one once it reaches the fabric.
func TestCopiedStateDirClaimsAnew(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	original, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	image, err := r.AddNode("image")
	if err != nil {
		t.Fatal(err)
	}
	// The image is made while node2 is stopped, as a disk snapshot would be.
	nodes[1].Stop(syscall.SIGTERM)
	if out, err := rig.Run("cp", "-a", filepath.Join(nodes[1].Dir, "state"), filepath.Join(image.Dir, "state")); err != nil {
		t.Fatalf("copy state: %v %s", err, out)
	}
	startReady(t, nodes[1], nodes[0])
	if err := r.Partition(image); err != nil {
		t.Fatal(err)
	}
	if err := image.Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	// Cut off, it must not serve node2's subnet as its own: watch it for a
	// while (it has no peers to learn anything from meanwhile).
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, err := image.Status(); err == nil && st.Node.Subnet == original.Node.Subnet {
			t.Fatalf("the copied node took node2's subnet %s as its own", st.Node.Subnet)
		}
	}
	if err := r.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := image.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := image.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.Subnet == original.Node.Subnet {
		t.Fatalf("the copied node claimed node2's subnet %s", st.Node.Subnet)
	}
	if !strings.Contains(rig.Tail(image.LogPath(), 100), "holds another node's lease") {
		t.Fatal("the copied node did not say why it claimed anew")
	}
	for _, n := range r.Nodes() {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Conflicts != 0 {
			t.Fatalf("%s counts %d subnet conflicts", n.Name, st.Node.Conflicts)
		}
		if n == nodes[1] && st.Node.Subnet != original.Node.Subnet {
			t.Fatalf("node2 moved from %s to %s", original.Node.Subnet, st.Node.Subnet)
		}
	}
	waitConverged(t, r.Nodes())
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b"), addPod(t, image, "c")}, 30*time.Second)
}

// stampMicro matches the microseconds of ping -D's timestamps.
const stampMicro = "15:04:05.000000"

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingReply   = regexp.MustCompile(`^(?:\[(\d+)\.(\d+)\] )?\d+ bytes from .* icmp_seq=(\d+) `)
)

// pingRun is a run of pings in the background.
type pingRun struct {
	count int
	done  chan string
}

// startPings sends count pings from one pod to another, 100 a second, in
// the background, and returns once one got through.
func startPings(t *testing.T, from, to *rig.Pod, count int) *pingRun {
	t.Helper()
	run := &pingRun{count: count, done: make(chan string, 1)}
	go func() {
		out, _ := from.Exec("ping", "-D", "-i", "0.01", "-c", fmt.Sprint(count), "-W", "1", to.IP.String())
		run.done <- out
	}()
	if err := rig.Eventually(5*time.Second, func() error { return rig.Ping(from.NS, to.IP) }); err != nil {
		t.Fatal(err)
	}
	return run
}

// losses waits for the run to end and says which pings had no reply (nil
// when all had).
func (p *pingRun) losses(t *testing.T) error {
	t.Helper()
	select {
	case out := <-p.done:
		return pingLosses(out, p.count)
	case <-time.After(time.Minute + time.Duration(p.count)*10*time.Millisecond):
		t.Fatal("ping did not finish")
		return nil
	}
}

// pingLosses checks that ping sent count echoes and had a reply to each.
// When it did not, the error names the unanswered sequence numbers and,
// from ping -D's timestamps, when the replies around the first gap came,
// so a failure tells a gap at the restart from one at the end of the run.
func pingLosses(out string, count int) error {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no ping summary in:\n%s", lastLines(out, 4))
	}
	answered := map[int]string{}
	for _, line := range strings.Split(out, "\n") {
		r := pingReply.FindStringSubmatch(line)
		if r == nil {
			continue
		}
		seq, _ := strconv.Atoi(r[3])
		answered[seq] = ""
		if r[1] != "" {
			sec, _ := strconv.ParseInt(r[1], 10, 64)
			usec, _ := strconv.ParseInt(r[2], 10, 64)
			answered[seq] = time.Unix(sec, usec*1000).Format(stampMicro)
		}
	}
	var missing []int
	for seq := 1; seq <= count; seq++ {
		if _, ok := answered[seq]; !ok {
			missing = append(missing, seq)
		}
	}
	if m[1] == fmt.Sprint(count) && m[2] == m[1] && len(missing) == 0 {
		return nil
	}
	if len(missing) == 0 {
		return fmt.Errorf("%s", m[0])
	}
	first := missing[0]
	return fmt.Errorf("%s; no reply to icmp_seq %s; around the first, replies to %d at %q and %d at %q",
		m[0], shortList(missing, 20), first-1, answered[first-1], first+1, answered[first+1])
}

// shortList prints at most n numbers of a list.
func shortList(l []int, n int) string {
	if len(l) <= n {
		return fmt.Sprint(l)
	}
	return fmt.Sprintf("%v and %d more", l[:n], len(l)-n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestNodeWaitsForAFreeSubnet: in a cluster CIDR with no subnet left, a
// new node does not exit (a supervisor would restart it into the same
// wall); it stays up, not ready, saying why, and claims the subnet a dead
// node held as soon as that node's reservation ends.
func TestNodeWaitsForAFreeSubnet(t *testing.T) {
	r := newRig(t, "--cluster-cidr", "10.244.0.0/23", "--dead-node-grace", "0s", "--lease-ttl", "6s")
	nodes := startNodes(t, r, 2)
	gone, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	nodes[1].Stop(syscall.SIGKILL)
	late := addStarted(t, r, "late", nodes[0])
	waitNotReadyFor(t, late, 20*time.Second, "no free subnet: all 2 /24 subnets of 10.244.0.0/23 are claimed")
	if err := late.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !late.Running() || !processRunning(late.Pid()) {
		t.Fatal("the late node's agent exited instead of waiting")
	}
	st, err := late.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.Subnet != gone.Node.Subnet {
		t.Fatalf("late claimed %s, want the dead node's %s once its reservation ended", st.Node.Subnet, gone.Node.Subnet)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, late, "b")}, 30*time.Second)
}

// TestLongGoneNodesAreForgotten: a fabric that replaces its nodes must
// not carry every node it ever had. Two lease TTLs after a dead node's
// reservation lapsed, or after a node left, every node forgets its claim,
// then the node itself and the records of its pods; a forgotten node that
// comes back is taken in again like any other.
func TestLongGoneNodesAreForgotten(t *testing.T) {
	r := newRig(t, "--dead-node-grace", "0s", "--lease-ttl", "3s")
	nodes := startNodes(t, r, 4)
	// The pods of the two nodes that go are in every node's pod directory.
	addPod(t, nodes[2], "gone-c")
	addPod(t, nodes[3], "gone-d")
	podRecords := func(n *rig.Node) (float64, error) { return n.Metric("loom_pod_directory_records", `state="live"`) }
	for _, n := range nodes[:2] {
		if err := rig.Eventually(30*time.Second, func() error {
			if v, err := podRecords(n); err != nil || v != 2 {
				return fmt.Errorf("%s holds %v pod records, want 2 (%v)", n.Name, v, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	crashed, _ := nodes[2].Status()
	nodes[2].Stop(syscall.SIGKILL)
	leaver := nodes[3]
	if out, err := rig.Run(filepath.Join(binaries(t), "loomctl"), "--socket", leaver.Socket, "leave"); err != nil {
		t.Fatalf("leave: %v %s", err, out)
	}
	forgotten := func(n *rig.Node, names ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		leases, err := n.Client().Subnets(ctx)
		if err != nil {
			return err
		}
		st, err := n.Status()
		if err != nil {
			return err
		}
		for _, name := range names {
			for _, l := range leases {
				if l.Owner == name {
					return fmt.Errorf("%s still has %s's claim on %s (%s)", n.Name, name, l.Subnet, l.State)
				}
			}
			for _, p := range st.Peers {
				if p.Name == name {
					return fmt.Errorf("%s still lists %s (%s)", n.Name, name, p.State)
				}
			}
		}
		if v, err := podRecords(n); err != nil || v != 0 {
			return fmt.Errorf("%s still holds %v pod records (%v)", n.Name, v, err)
		}
		return nil
	}
	for _, n := range nodes[:2] {
		if err := rig.Eventually(60*time.Second, func() error { return forgotten(n, "node3", "node4") }); err != nil {
			t.Fatal(err)
		}
	}
	if log := rig.Tail(nodes[0].LogPath(), wholeLog); !strings.Contains(log, "forgot peer gone long ago") ||
		!strings.Contains(log, "forgot pod records of nodes gone long ago") {
		t.Fatal("forgetting was not logged")
	}
	// The crashed node returns with its state: taken in again, and its
	// subnet, free since, is its own again.
	startReady(t, nodes[2], nodes[0])
	back, _ := nodes[2].Status()
	if back.Node.Subnet != crashed.Node.Subnet {
		t.Fatalf("node3 came back with %s, want its own %s (nobody took it)", back.Node.Subnet, crashed.Node.Subnet)
	}
	waitConverged(t, nodes[:3])
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, nodes[2], "c")}, 30*time.Second)
}

// TestFabricRestartsFromRememberedPeers: after a power cut every agent
// starts again as its unit says: the first node with no --join (it
// bootstrapped the fabric), the others with --join pointing at the first,
// which is still down when they start. They find each other through the
// peers each remembered, the first node rejoins them instead of
// bootstrapping a fabric of its own, and the pods of before reach each
// other again.
func TestFabricRestartsFromRememberedPeers(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 3)
	var pods []*rig.Pod
	for _, n := range nodes {
		pods = append(pods, addPod(t, n, n.Name+"-p"))
	}
	waitAllReach(t, pods, 30*time.Second)
	// Every node has remembered its peers once it programmed them.
	waitConverged(t, nodes)
	for _, n := range nodes {
		n.Stop(syscall.SIGKILL)
	}
	for _, n := range nodes[1:] {
		if err := n.Start(nodes[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, nodes)
	// Its log holds both runs: only the first may have bootstrapped. (The
	// second may not manage to join at once either, if the others are
	// not listening yet; then it waits for them, reusing its lease.)
	if log := rig.Tail(nodes[0].LogPath(), wholeLog); strings.Count(log, "bootstrapping a new fabric") != 1 {
		t.Fatalf("node1 bootstrapped a fabric of its own on its second start:\n%s", log)
	}
	waitAllReach(t, pods, 30*time.Second)
}

// TestRebootReleasesEarlierPods: a reboot takes every pod namespace of the
// node with it, and runtimes do not all send DEL for them. When loomd
// starts in a new boot, the addresses of the earlier boot's pods are free
// again and their records leave the peers' pod directories; a restart in
// the same boot keeps allocations whose pods it cannot see (that is the
// runtime's DEL or GC to decide).
func TestRebootReleasesEarlierPods(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	a1, a2, b := addPod(t, nodes[0], "a1"), addPod(t, nodes[0], "a2"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a1, a2, b}, 30*time.Second)
	allocated := func(n *rig.Node) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pods, err := n.Client().Pods(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(pods)
	}
	// The "reboot": the agent dies, and both pod namespaces go with no DEL.
	nodes[0].Stop(syscall.SIGKILL)
	for _, p := range []*rig.Pod{a1, a2} {
		if out, err := rig.Run("ip", "netns", "del", p.NS); err != nil {
			t.Fatalf("delete %s: %v %s", p.NS, err, out)
		}
	}
	startReady(t, nodes[0], nodes[1])
	if n := allocated(nodes[0]); n != 2 {
		t.Fatalf("a restart in the same boot left %d allocations, want the 2 it had", n)
	}
	nodes[0].Stop(syscall.SIGKILL)
	if err := nodes[0].StartAfterReboot("00000000-0000-4000-8000-00000000b007", nodes[1]); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := allocated(nodes[0]); n != 0 {
		t.Fatalf("after a reboot %d allocations of the earlier boot are left", n)
	}
	if !strings.Contains(rig.Tail(nodes[0].LogPath(), wholeLog), "released the addresses of the earlier boot's pods") {
		t.Fatal("the release was not logged")
	}
	if err := rig.Eventually(30*time.Second, func() error {
		v, err := nodes[1].Metric("loom_pod_directory_records", `state="live"`)
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("node2's pod directory holds %v live records, want 1 (its own pod)", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "c"), b}, 30*time.Second)
}

// TestRestartedFabricKeepsAbsentNodesSubnets: after every agent stopped
// (a power cut), a node that comes back before another must not let a
// newcomer take the absent node's subnet. It knew the claim before it
// stopped; it used to start with its own only, and the newcomer claimed
// the subnet, so the absent node came back to a conflict it lost.
func TestRestartedFabricKeepsAbsentNodesSubnets(t *testing.T) {
	r := newRig(t, "--cluster-cidr", "10.244.0.0/23")
	nodes := startNodes(t, r, 2)
	absent, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	nodes[0].Stop(syscall.SIGTERM)
	nodes[1].Stop(syscall.SIGTERM)
	startReady(t, nodes[0], nodes[1])
	late := addStarted(t, r, "late", nodes[0])
	stolen := false
	if err := rig.Eventually(20*time.Second, func() error {
		st, err := late.Status()
		if err != nil {
			return err
		}
		if stolen = st.Node.Subnet == absent.Node.Subnet; stolen {
			return nil
		}
		if st.Node.Ready || !strings.Contains(strings.Join(st.Node.NotReady, "; "), "no free subnet") {
			return fmt.Errorf("late: ready=%v, not ready because %q; want it waiting for a free subnet", st.Node.Ready, st.Node.NotReady)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if stolen {
		t.Fatalf("late claimed %s, node2's, while node2 was down", absent.Node.Subnet)
	}
	// Once membership settled without node2, its claim is reserved for
	// --lease-ttl like a dead node's, not left active for good; node2
	// takes it back when it returns.
	waitLogged(t, nodes[0], "lease reserved for a node not heard from since this agent started", 30*time.Second)
	startReady(t, nodes[1], nodes[0])
	if st, err := nodes[1].Status(); err != nil || st.Node.Subnet != absent.Node.Subnet {
		t.Fatalf("node2 came back with %v (%v), want its %s", st.Node.Subnet, err, absent.Node.Subnet)
	}
}
