package integration

import (
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestChurn drives 200 join, leave, crash and restart events over 8 nodes
// as fast as they can be issued, then checks that every live node's kernel
// holds exactly the entries the live membership implies (full dumps, not
// counts) and that no subnet has two owners.
func TestChurn(t *testing.T) { churn(t) }

// TestChurnWireGuard is TestChurn over the WireGuard backend; the kernel
// check expects routes through loom-wg, and pods on every live node must
// then reach each other, which needs every device's peers to be right.
func TestChurnWireGuard(t *testing.T) { churn(t, "--backend", "wireguard") }

func churn(t *testing.T, agentArgs ...string) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("LOOM_CHURN_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("churn seed %d (set LOOM_CHURN_SEED to replay)", seed)
	rnd := rand.New(rand.NewSource(seed))

	r := newRig(t, append([]string{"--dead-node-grace", "0s"}, agentArgs...)...)
	nodes := startNodes(t, r, 8)
	ctl := filepath.Join(binaries(t), "loomctl")
	running := func() []*rig.Node {
		var out []*rig.Node
		for _, n := range nodes {
			if n.Running() {
				out = append(out, n)
			}
		}
		return out
	}
	counts := map[string]int{}
	for i := 0; i < 200; i++ {
		n := nodes[rnd.Intn(len(nodes))]
		live := running()
		if !n.Running() {
			if err := n.Start(live...); err != nil {
				t.Fatal(err)
			}
			counts["join"]++
			continue
		}
		if len(live) <= 2 {
			continue // keep a fabric to come back to
		}
		switch rnd.Intn(3) {
		case 0:
			n.Stop(syscall.SIGKILL)
			counts["crash"]++
		case 1:
			// A clean leave needs a ready agent; one still starting is stopped instead.
			if _, err := rig.Run(ctl, "--socket", n.Socket, "leave"); err != nil {
				n.Stop(syscall.SIGTERM)
				counts["stop"]++
			} else {
				n.Stop(syscall.SIGTERM) // reap the exited process
				counts["leave"]++
			}
		case 2:
			n.Stop(syscall.SIGTERM)
			if err := n.Start(running()...); err != nil {
				t.Fatal(err)
			}
			counts["restart"]++
		}
	}
	t.Logf("events: %v", counts)

	live := running()
	for _, n := range live {
		if err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, live)
	owners := map[string]string{}
	for _, n := range live {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if o, dup := owners[st.Node.Subnet]; dup {
			t.Fatalf("subnet %s owned by %s and %s", st.Node.Subnet, o, n.Name)
		}
		owners[st.Node.Subnet] = n.Name
	}
	for _, n := range live {
		waitKernelMatches(t, n, live, nil, 60*time.Second)
	}
	var pods []*rig.Pod
	for _, n := range live {
		pods = append(pods, addPod(t, n, n.Name+"-afterchurn"))
	}
	waitAllReach(t, pods, 30*time.Second)
}
