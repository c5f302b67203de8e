package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestVXLANPacketsUntracked: with Loom's defaults (masquerade on, so
// connection tracking runs on every node) pods' own flows are tracked, as
// Services and policies need, but the VXLAN packets that carry them
// between nodes are not: each node tracks the pods' ping and no flow to
// the VXLAN port.
func TestVXLANPacketsUntracked(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	a := addPod(t, nodes[0], "a")
	b := addPod(t, nodes[1], "b")
	if err := rig.Eventually(30*time.Second, func() error { return rig.Ping(a.NS, b.IP) }); err != nil {
		t.Fatalf("pod to pod across nodes: %v", err)
	}
	inner := fmt.Sprintf("src=%s dst=%s", a.IP, b.IP)
	for _, n := range nodes {
		flows, err := n.Exec("cat", "/proc/net/nf_conntrack")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(flows, inner) {
			t.Errorf("%s does not track the pods' ping (%s); conntrack must be on for this test to mean anything:\n%s", n.Name, inner, flows)
		}
		for _, f := range strings.Split(flows, "\n") {
			if strings.Contains(f, "dport=4789 ") {
				t.Errorf("%s tracks a VXLAN flow: %s", n.Name, f)
			}
		}
	}
}
