package integration

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/integration/rig"
)

// TestKeyRotation rotates the fabric from key A to key B (install B, use B,
// remove A) while pods ping at 100 packets/s: no packet is lost and no node
// drops out. Afterwards a node holding only A cannot join, and a restarted
// node comes back on the rotated keyring it persisted.
func TestKeyRotation(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 3)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[2], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 20*time.Second)
	ctl := func(n *rig.Node, args ...string) string {
		t.Helper()
		out, err := rig.Run(filepath.Join(binaries(t), "loomctl"), append([]string{"--socket", n.Socket}, args...)...)
		if err != nil {
			t.Fatalf("loomctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	keyA, _ := os.ReadFile(r.KeyFile)
	rawA, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(keyA)))
	keyB := strings.TrimSpace(ctl(nodes[0], "keygen"))
	rawB, _ := base64.StdEncoding.DecodeString(keyB)

	pings := startPings(t, a, b, 800)
	for _, step := range [][]string{{"install", keyB}, {"use", keyB}, {"remove", strings.TrimSpace(string(keyA))}} {
		out := ctl(nodes[1], append([]string{"keyring"}, step...)...)
		if strings.Count(out, " ok ") != 3 {
			t.Fatalf("keyring %s: not ok on all 3 nodes:\n%s", step[0], out)
		}
	}
	list := ctl(nodes[0], "keyring", "list")
	if strings.Count(list, gossip.KeyFingerprint(rawB)) != 3 || strings.Contains(list, gossip.KeyFingerprint(rawA)) {
		t.Fatalf("after rotation every node should hold only key B:\n%s", list)
	}
	if err := pings.losses(t); err != nil {
		t.Fatalf("packets lost during key rotation: %v", err)
	}
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.State != "alive" {
				t.Fatalf("%s sees %s as %s after rotation", n.Name, p.Name, p.State)
			}
		}
	}

	// A node with only the old key is refused.
	stale, err := r.AddNode("stale")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := getMetric(t, nodes[0], "loom_gossip_key_failures_total", "")
	if err := stale.Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(20*time.Second, func() error {
		if v, _ := getMetric(t, nodes[0], "loom_gossip_key_failures_total", ""); v <= before {
			return fmt.Errorf("node1 has not rejected the stale node yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if st, _ := nodes[0].Status(); len(st.Peers) != 2 {
		t.Fatalf("node1 has %d peers, want 2: the stale node must not appear", len(st.Peers))
	}

	// A restarted node uses the keyring it persisted, not its key file.
	nodes[1].Stop(syscall.SIGTERM)
	if err := nodes[1].Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, nodes)
}
