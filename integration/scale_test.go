package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/policy"
)

// TestLargePodDirectoryStillJoins: a node that knows a large fabric's
// pods (100,000 of them, with Kubernetes-like names and labels) hands them
// to a joining node in the join's push/pull. Their plain encoding is more
// than memberlist takes in one (20 MiB of user state): the joiner used
// to refuse it, so no node could join a fabric that large. Now they go
// compressed, and the joiner is ready and its pods reachable as in a
// small fabric.
func TestLargePodDirectoryStillJoins(t *testing.T) {
	r := newRig(t)
	node1 := startNodes(t, r, 1)[0]
	node1.Stop(syscall.SIGTERM)
	const nodes, perNode = 400, 250
	seedPodDirectory(t, node1, nodes, perNode)
	startReady(t, node1)
	node2 := addStarted(t, r, "node2", node1)
	if err := node2.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, node1, "a"), addPod(t, node2, "b")}, 30*time.Second)
	if err := rig.Eventually(60*time.Second, func() error {
		v, err := node2.Metric("loom_pod_directory_records", `state="live"`)
		if err != nil {
			return err
		}
		if v < nodes*perNode {
			return fmt.Errorf("node2's pod directory holds %v live records, want the %d node1 knows", v, nodes*perNode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// What node2 learnt in the join was no news to anyone else: it relayed
	// none of it, only its own pod. It used to queue a broadcast for every
	// record, which took it half a minute and would have filled its gossip
	// for most of an hour.
	if sent, err := node2.Metric("loom_gossip_messages_total", `direction="sent",type="pods"`); err != nil || sent > 2 {
		t.Fatalf("node2 sent %v pod directory updates (%v), want its own pod's only", sent, err)
	}
	// Compressed, and far from the limit.
	if v, err := node1.Metric("loom_gossip_state_bytes", ""); err != nil || v == 0 || v > 10<<20 {
		t.Fatalf("node1's push/pull state is %v bytes (%v), want some, and at most half memberlist's limit", v, err)
	}
}

// seedPodDirectory saves records of pods on other nodes (not members of
// the rig's fabric, published just now) into a stopped node's store, as
// if it had learnt them from gossip before it stopped.
func seedPodDirectory(t *testing.T, n *rig.Node, nodes, perNode int) {
	t.Helper()
	st, err := ipam.OpenStore(filepath.Join(n.Dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	var recs []policy.PodRecord
	for i := range nodes {
		for p := range perNode {
			seq := i*perNode + p
			recs = append(recs, policy.PodRecord{Node: fmt.Sprintf("worker-%03d.example.internal", i),
				IP: netip.AddrFrom4([4]byte{10, 244, byte(i % 200), byte(p + 2)}), Version: uint64(now.UnixNano()) + uint64(seq),
				Namespace: "payments", Name: fmt.Sprintf("checkout-api-7d9f8c6b5-%05x", seq*2654435761%1048576),
				Labels: map[string]string{"app.kubernetes.io/name": "checkout-api", "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
				Since:  now.Unix()})
		}
	}
	// A directory of its own encodes them as the agent saves them.
	b, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	dir := policy.NewDirectory("seeder", nil)
	if _, _, err := dir.MergeRemoteState(b); err != nil {
		t.Fatal(err)
	}
	put := dir.Unsaved().Put
	if len(put) != len(recs) {
		t.Fatalf("the seed holds %d records, want %d", len(put), len(recs))
	}
	if err := st.SaveDirectory(put, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRemotePodChurnCostsNoReconcile: without policies from files,
// nothing in a node's kernel depends on other nodes' pods, so their churn
// (several changes a second in a large fabric) must not make it reconcile.
// Every pod directory change used to start a reconcile on every node.
func TestRemotePodChurnCostsNoReconcile(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	reconciles := func() float64 {
		var sum float64
		for _, reason := range []string{"membership", "pods"} {
			v, err := nodes[0].Metric("loom_reconcile_runs_total", `reason="`+reason+`"`)
			if err != nil {
				t.Fatal(err)
			}
			sum += v
		}
		return sum
	}
	before := reconciles()
	var pods []*rig.Pod
	for i := range 6 {
		pods = append(pods, addPod(t, nodes[1], fmt.Sprintf("p%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range pods[:3] {
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := rig.Eventually(30*time.Second, func() error {
		live, err := nodes[0].Metric("loom_pod_directory_records", `state="live"`)
		if err != nil {
			return err
		}
		deleted, err := nodes[0].Metric("loom_pod_directory_records", `state="deleted"`)
		if err != nil {
			return err
		}
		if live != 3 || deleted != 3 {
			return fmt.Errorf("node1's pod directory holds %v live and %v deleted records, want node2's 3 and 3", live, deleted)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := reconciles() - before; n != 0 {
		t.Fatalf("node2's pods made node1 reconcile %v times, want none", n)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, nodes[0], "a"), pods[3]}, 30*time.Second)
}
