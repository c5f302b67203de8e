package integration

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestChaos interleaves, at random, what happens to a fabric in
// production: pods come and go and are replaced on other nodes, agents
// crash, stop and restart, all of them at once (a power cut), a node's
// agent freezes (a paused VM, a node starved of CPU) with or without a
// flood of kernel notifications piling up meanwhile, a node is cut off and
// comes back. Three nodes enforce a NetworkPolicy (db admits only web).
// After every step the whole promise must hold again: every agent ready
// and programmed with every other, every kernel holding exactly what the
// live nodes and its pods imply, every pod reaching every other, web
// reaching db and other refused. The seed is logged; LOOM_CHAOS_SEED
// replays it.
func TestChaos(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("LOOM_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("chaos seed %d (set LOOM_CHAOS_SEED to replay)", seed)
	rng := rand.New(rand.NewSource(seed))
	// The resync is an hour away: repairs must come from what the agents
	// watch and gossip, not from a timer.
	r := newRig(t, "--dead-node-grace", "2s", "--resync-interval", "1h")
	nodes := startPolicyNodes(t, r, 3, dbAdmitsWeb())
	flood := writeRouteFlood(t, t.TempDir())
	pick := func() *rig.Node { return nodes[rng.Intn(len(nodes))] }
	upTo := func(d time.Duration) { time.Sleep(time.Duration(rng.Int63n(int64(d)))) }

	podsOn := map[*rig.Node][]*rig.Pod{}
	nodeOf := map[*rig.Pod]*rig.Node{}
	seq := 0
	add := func(n *rig.Node, app string) *rig.Pod {
		seq++
		p := addLabelled(t, n, fmt.Sprintf("%s%d", app, seq), app)
		podsOn[n], nodeOf[p] = append(podsOn[n], p), n
		return p
	}
	del := func(p *rig.Pod) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
		n := nodeOf[p]
		podsOn[n] = slices.DeleteFunc(podsOn[n], func(q *rig.Pod) bool { return q == p })
		delete(nodeOf, p)
	}
	db, web, other := add(pick(), "db"), add(pick(), "web"), add(pick(), "other")
	serve(t, db.NS)
	plain := []*rig.Pod{add(pick(), "plain")}
	restart := func(n *rig.Node, sig syscall.Signal) {
		n.Stop(sig)
		if err := n.Start(nodes...); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		name string
		do   func(n *rig.Node)
	}{
		{"add a pod", func(n *rig.Node) { plain = append(plain, add(n, "plain")) }},
		{"delete a pod", func(*rig.Node) {
			if len(plain) > 1 {
				i := rng.Intn(len(plain))
				del(plain[i])
				plain = slices.Delete(plain, i, i+1)
			}
		}},
		{"move db", func(n *rig.Node) { del(db); db = add(n, "db"); serve(t, db.NS) }},
		{"move web", func(n *rig.Node) { del(web); web = add(n, "web") }},
		{"move other", func(n *rig.Node) { del(other); other = add(n, "other") }},
		{"crash and restart the agent", func(n *rig.Node) { restart(n, syscall.SIGKILL) }},
		{"stop, wait, start the agent", func(n *rig.Node) {
			n.Stop(syscall.SIGTERM)
			upTo(4 * time.Second)
			if err := n.Start(nodes...); err != nil {
				t.Fatal(err)
			}
		}},
		{"crash every agent, start them in any order", func(*rig.Node) {
			for _, m := range nodes {
				m.Stop(syscall.SIGKILL)
			}
			for _, i := range rng.Perm(len(nodes)) {
				if err := nodes[i].Start(nodes...); err != nil {
					t.Fatal(err)
				}
				upTo(2 * time.Second)
			}
		}},
		{"freeze the agent", func(n *rig.Node) {
			pid := n.Pid()
			syscall.Kill(pid, syscall.SIGSTOP)
			upTo(8 * time.Second)
			syscall.Kill(pid, syscall.SIGCONT)
		}},
		{"flood the frozen agent with route changes", func(n *rig.Node) { floodWhileStopped(t, n, flood) }},
		{"cut the node off, then reconnect it", func(n *rig.Node) {
			if err := r.Partition(n); err != nil {
				t.Fatal(err)
			}
			upTo(8 * time.Second)
			if err := r.Heal(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	enforced := func() error { return onlyWebReachesDB(web, other, db) }

	const duration = 75 * time.Second
	done := map[string]int{}
	for i, start := 0, time.Now(); time.Since(start) < duration; i++ {
		s, n := steps[rng.Intn(len(steps))], pick()
		t.Logf("step %d: %s (%s)", i, s.name, n.Name)
		s.do(n)
		done[s.name]++
		for _, m := range nodes {
			if err := m.WaitReady(60 * time.Second); err != nil {
				t.Fatalf("after %q on %s: %v", s.name, n.Name, err)
			}
		}
		waitConverged(t, nodes)
		for _, m := range nodes {
			var ips []netip.Addr
			for _, p := range podsOn[m] {
				ips = append(ips, p.IP)
			}
			waitKernelMatches(t, m, nodes, ips, 30*time.Second)
		}
		// db admits pings from web only; every other pair must reach.
		reach := append([]*rig.Pod{web, other}, plain...)
		waitAllReach(t, reach, 30*time.Second)
		if err := rig.Eventually(30*time.Second, enforced); err != nil {
			t.Fatalf("after %q on %s: %v", s.name, n.Name, err)
		}
	}
	t.Logf("steps: %v", done)
	if len(done) < 4 {
		t.Fatalf("only %d kinds of step ran: the test checked little", len(done))
	}
}
