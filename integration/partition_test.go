package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/ipam"
)

// TestPartitionHeals splits four nodes 2+2, lets a new node join each side
// while they are apart, arranged so both pick the same subnet, then heals:
// afterwards no subnet has two owners, the loser moved and says so, its
// pod on the lost subnet fails CHECK, every pod that should reach does,
// and every kernel holds exactly the entries of the live peers.
func TestPartitionHeals(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/21") // 8 subnets: collisions are easy to arrange
	r := newRig(t, "--cluster-cidr", cluster.String(), "--dead-node-grace", "1s")
	nodes := startNodes(t, r, 4)
	taken := map[netip.Prefix]bool{}
	for _, n := range nodes {
		st, _ := n.Status()
		taken[netip.MustParsePrefix(st.Node.Subnet)] = true
	}
	nameA, nameB, shared := collidingNames(t, cluster, taken)
	t.Logf("joiners %s and %s will both pick %s", nameA, nameB, shared)

	sideA, sideB := nodes[:2], nodes[2:]
	if err := r.Partition(sideB...); err != nil {
		t.Fatal(err)
	}
	waitSeesDead(t, sideA[0], sideB)
	waitSeesDead(t, sideB[0], sideA)

	joinerA, err := r.AddNode(nameA)
	if err != nil {
		t.Fatal(err)
	}
	joinerB, err := r.AddNode(nameB)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Partition(joinerB); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct{ n, via *rig.Node }{{joinerA, sideA[0]}, {joinerB, sideB[0]}} {
		if err := j.n.Start(j.via); err != nil {
			t.Fatal(err)
		}
		if err := j.n.WaitReady(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range []*rig.Node{joinerA, joinerB} {
		if st, _ := j.Status(); st.Node.Subnet != shared.String() {
			t.Fatalf("%s claimed %s, expected the arranged collision on %s", j.Name, st.Node.Subnet, shared)
		}
	}
	podA, podB := addPod(t, joinerA, "pa"), addPod(t, joinerB, "pb")

	if err := r.Heal(); err != nil {
		t.Fatal(err)
	}
	all := r.Nodes()
	waitConverged(t, all)

	// Exactly one of the joiners keeps the subnet; the other moved.
	owners := map[string]string{}
	var winner, loser *rig.Node
	for _, n := range all {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if o, dup := owners[st.Node.Subnet]; dup {
			t.Fatalf("subnet %s owned by both %s and %s after healing", st.Node.Subnet, o, n.Name)
		}
		owners[st.Node.Subnet] = n.Name
		if n == joinerA || n == joinerB {
			if st.Node.Subnet == shared.String() {
				winner = n
			} else {
				loser = n
				if st.Node.Conflicts != 1 {
					t.Fatalf("loser %s reports %d conflicts, want 1", n.Name, st.Node.Conflicts)
				}
			}
		}
	}
	if winner == nil || loser == nil {
		t.Fatal("the conflict was not resolved to one winner and one loser")
	}
	winnerPod, loserPod := podA, podB
	if winner == joinerB {
		winnerPod, loserPod = podB, podA
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loserPod.Check(ctx); err == nil {
		t.Fatalf("CHECK passed for %s's pod holding an address of the lost subnet", loser.Name)
	}
	if err := winnerPod.Check(ctx); err != nil {
		t.Fatalf("CHECK of the winner's pod: %v", err)
	}

	pods := []*rig.Pod{winnerPod}
	podIPs := map[*rig.Node][]netip.Addr{winner: {winnerPod.IP}}
	for _, n := range all {
		p := addPod(t, n, "after-"+n.Name)
		pods = append(pods, p)
		podIPs[n] = append(podIPs[n], p.IP)
	}
	waitAllReach(t, pods, 30*time.Second)
	for _, n := range all {
		waitKernelMatches(t, n, all, podIPs[n], 30*time.Second)
	}
}

// collidingNames finds two node names whose first free subnet, given the
// taken ones, is the same.
func collidingNames(t *testing.T, cluster netip.Prefix, taken map[netip.Prefix]bool) (string, string, netip.Prefix) {
	space, err := ipam.NewSubnetSpace(cluster, 24)
	if err != nil {
		t.Fatal(err)
	}
	first := func(name string) netip.Prefix {
		for _, s := range space.RendezvousOrder(name) {
			if !taken[s] {
				return s
			}
		}
		t.Fatal("no free subnet")
		return netip.Prefix{}
	}
	for i := 0; i < 100; i++ {
		a := fmt.Sprintf("east%d", i)
		for j := 0; j < 100; j++ {
			b := fmt.Sprintf("west%d", j)
			if s := first(a); s == first(b) {
				return a, b, s
			}
		}
	}
	t.Fatal("no colliding names found")
	return "", "", netip.Prefix{}
}

// waitSeesDead waits until n sees every node of others as dead.
func waitSeesDead(t *testing.T, n *rig.Node, others []*rig.Node) {
	t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		state := map[string]string{}
		for _, p := range st.Peers {
			state[p.Name] = p.State
		}
		for _, o := range others {
			if state[o.Name] != "dead" {
				return fmt.Errorf("%s sees %s as %q", n.Name, o.Name, state[o.Name])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConflictLoserWithoutSpaceWaits: the loser of a subnet conflict that
// finds no other subnet free gives the subnet up and waits, not ready,
// instead of keeping (and advertising) a subnet another node holds and
// counting the same conflict on every pass. Two nodes fill a /23; cut
// apart, node1's side sees node2's reservation end and a node joining
// there takes node2's subnet. On healing both claim it, and one of them
// is left without a subnet (which one follows the merge rules: node2's
// reservation had ended on the other side).
func TestConflictLoserWithoutSpaceWaits(t *testing.T) {
	r := newRig(t, "--cluster-cidr", "10.244.0.0/23", "--dead-node-grace", "0s", "--lease-ttl", "2s")
	nodes := startNodes(t, r, 2)
	held, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Partition(nodes[1]); err != nil {
		t.Fatal(err)
	}
	waitSeesDead(t, nodes[0], nodes[1:])
	joiner, err := r.AddNode("joiner")
	if err != nil {
		t.Fatal(err)
	}
	startReady(t, joiner, nodes[0])
	if st, _ := joiner.Status(); st.Node.Subnet != held.Node.Subnet {
		t.Fatalf("joiner claimed %s, expected node2's %s once its reservation ended", st.Node.Subnet, held.Node.Subnet)
	}
	if err := r.Heal(); err != nil {
		t.Fatal(err)
	}
	var winner, loser *rig.Node
	if err := rig.Eventually(30*time.Second, func() error {
		winner, loser = nil, nil
		for _, n := range []*rig.Node{nodes[1], joiner} {
			st, err := n.Status()
			if err != nil {
				return err
			}
			switch {
			case st.Node.Ready && st.Node.Subnet == held.Node.Subnet:
				winner = n
			case !st.Node.Ready && st.Node.Subnet == "" && strings.Contains(strings.Join(st.Node.NotReady, "; "), "no free subnet"):
				loser = n
			default:
				return fmt.Errorf("%s: ready=%v subnet=%q not ready because %q", n.Name, st.Node.Ready, st.Node.Subnet, st.Node.NotReady)
			}
		}
		if winner == nil || loser == nil {
			return fmt.Errorf("want one of node2 and joiner holding %s and the other waiting", held.Node.Subnet)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s kept %s; %s waits", winner.Name, held.Node.Subnet, loser.Name)
	// The conflict is counted once, however many passes the agent makes
	// meanwhile (one at least every 5 s).
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		st, err := loser.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Conflicts != 1 || st.Node.Subnet != "" {
			t.Fatalf("%s counts %d conflicts with subnet %q, want 1 and none", loser.Name, st.Node.Conflicts, st.Node.Subnet)
		}
	}
	waitKernelMatches(t, nodes[0], []*rig.Node{nodes[0], winner}, nil, 20*time.Second)
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), addPod(t, winner, "b")}, 30*time.Second)
}

// TestJoinProgrammedWhileRejoinWaits: a peer whose packets vanish (cut
// off by a firewall, not unplugged: its address still resolves, so a dial
// to it waits out memberlist's TCP timeout, 10 s on lan) is contacted
// again every few seconds. Those attempts must not hold back the data
// plane of the node making them: a node that joins meanwhile is
// programmed there at once.
func TestJoinProgrammedWhileRejoinWaits(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 3)
	watcher, cut := nodes[0], nodes[2]
	// inet hooks leave ARP alone: watcher resolves cut's address and its
	// connection attempts go unanswered.
	mustExec(t, cut, "nft", "add table inet loomtest-cut; "+
		"add chain inet loomtest-cut in { type filter hook input priority -400; policy drop; }; "+
		"add chain inet loomtest-cut out { type filter hook output priority -400; policy drop; }")
	waitSeesDead(t, watcher, []*rig.Node{cut})
	// A rejoin that waited out the timeout has ended; the next has begun,
	// since the rejoin interval is shorter than the wait.
	failed := "failed to join " + net.JoinHostPort(cut.Addr.String(), "7946")
	waitLogged(t, watcher, failed, 30*time.Second)

	joiner, err := r.AddNode("joiner")
	if err != nil {
		t.Fatal(err)
	}
	startReady(t, joiner, nodes[1])
	// From the moment watcher's membership holds the joiner with its
	// subnet, one reconcile programs it; a rejoin in progress ends only
	// seconds later.
	const programmedWithin = 3 * time.Second
	var seen time.Time
	err = rig.Eventually(30*time.Second, func() error {
		st, err := watcher.Status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name != joiner.Name || p.State != "alive" || p.Subnet == "" || p.Subnet == "none" {
				continue
			}
			if seen.IsZero() {
				seen = time.Now()
			}
			if !p.Programmed {
				return fmt.Errorf("%s holds %s alive on %s but has not programmed it (%s)", watcher.Name, joiner.Name, p.Subnet, p.Reason)
			}
			return nil
		}
		return fmt.Errorf("%s does not hold %s alive with a subnet", watcher.Name, joiner.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(seen)
	if took > programmedWithin {
		t.Fatalf("%s programmed %s %s after holding it alive, want within %s: its reconciles were held back",
			watcher.Name, joiner.Name, took.Round(time.Millisecond), programmedWithin)
	}
	t.Logf("%s programmed %s %s after holding it alive", watcher.Name, joiner.Name, took.Round(time.Millisecond))
}
