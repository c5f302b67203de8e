package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestHitlessRestart pings between pods on two nodes at 100 packets/s while
// both agents are killed and restarted, then stopped with SIGTERM and
// restarted: not one packet may be lost.
func TestHitlessRestart(t *testing.T) { hitlessRestart(t) }

// TestHitlessRestartWireGuard is the same over the WireGuard backend,
// whose userspace device lives in a helper process the agent adopts.
func TestHitlessRestartWireGuard(t *testing.T) { hitlessRestart(t, "--backend", "wireguard") }

func hitlessRestart(t *testing.T, agentArgs ...string) {
	r := newRig(t, agentArgs...)
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			const count = 600 // 6 s at 100/s
			pingDone := make(chan string, 1)
			go func() {
				out, _ := a.Exec("ping", "-i", "0.01", "-c", fmt.Sprint(count), "-W", "1", b.IP.String())
				pingDone <- out
			}()
			// Let the ping get going, then take both agents down together.
			if err := rig.Eventually(5*time.Second, func() error { return rig.Ping(a.NS, b.IP) }); err != nil {
				t.Fatal(err)
			}
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
			var out string
			select {
			case out = <-pingDone:
			case <-time.After(30 * time.Second):
				t.Fatal("ping did not finish")
			}
			m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
			if m == nil || m[1] != fmt.Sprint(count) || m[2] != m[1] {
				t.Fatalf("packets lost across the restart:\n%s", lastLines(out, 4))
			}
		})
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
	if err := nodes[2].Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	after, _ := nodes[2].Status()
	if after.Node.Subnet != before.Node.Subnet {
		t.Fatalf("returning node got %s, want its old %s", after.Node.Subnet, before.Node.Subnet)
	}
	waitKernelMatches(t, nodes[0], nodes, nil, 20*time.Second)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
