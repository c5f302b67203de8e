package agent

import (
	"testing"

	"github.com/loomnet/loom/policy"
)

// A name is deleted once a view that lists nodes no longer has it, having
// had it before; views without a node list change nothing, and names never
// seen as Node objects (hosts outside the cluster) are never deleted.
func TestKubeNodesKnowsDeletedNodes(t *testing.T) {
	var k kubeNodes
	k.update(policy.ClusterView{NodesListed: true, Nodes: []string{"a", "b"}})
	if k.deleted("a") || k.deleted("b") || k.deleted("outside") {
		t.Fatal("a node deleted while the view has it, or one never seen")
	}
	k.update(policy.ClusterView{NodesListed: true, Nodes: []string{"a"}})
	if !k.deleted("b") || k.deleted("a") || k.deleted("outside") {
		t.Fatal("b, gone from the view, not deleted (or a or outside deleted)")
	}
	k.update(policy.ClusterView{})
	if !k.deleted("b") || k.deleted("a") {
		t.Fatal("a view without a node list changed what is known")
	}
	k.update(policy.ClusterView{NodesListed: true, Nodes: []string{"a", "b"}})
	if k.deleted("b") {
		t.Fatal("b, back as a Node object, still deleted")
	}
	// Deleted for good and forgotten by membership: no longer remembered;
	// a current Node object is kept whatever membership says.
	k.update(policy.ClusterView{NodesListed: true, Nodes: []string{"a"}})
	k.forget(func(string) bool { return false })
	if k.deleted("b") || len(k.seen) != 1 || !k.seen["a"] {
		t.Fatalf("after forgetting: seen %v, want only a", k.seen)
	}
}
