package bench

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/overlay"
	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PolicyResult is the cost of compiling and programming a policy set.
type PolicyResult struct {
	Compile, Program time.Duration
	// RemoteJoin and RemoteLeave program one more pod of another node
	// into the peer sets that select it, and take it out again.
	RemoteJoin, RemoteLeave time.Duration
	// Replica programs one more local pod with the labels of one running.
	Replica time.Duration
	// HeapBytes is what the compiled form holds.
	HeapBytes uint64
	LocalPods int
}

// SyntheticPolicies returns n policies over ten namespaces, each selecting
// one app's pods and allowing ingress from a team's namespaces and a tier,
// on one port; every fourth also restricts egress.
func SyntheticPolicies(n int) []networkingv1.NetworkPolicy {
	out := make([]networkingv1.NetworkPolicy, n)
	tcp := corev1.ProtocolTCP
	for i := range out {
		port := intstr.FromInt32(int32(8000 + i%10))
		p := networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: fmt.Sprintf("ns%d", i%10)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%20)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("%d", i%3)}},
					}, {IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
				}},
			},
		}
		if i%4 == 0 {
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (i+1)%20)}},
			}}}}
		}
		out[i] = p
	}
	return out
}

// SyntheticSnapshot spreads pods over ten namespaces and 1/local of them
// on this node (at most 250, a /24's worth).
func SyntheticSnapshot(pods, policies int) policy.Snapshot {
	s := policy.Snapshot{Policies: SyntheticPolicies(policies), Namespaces: map[string]map[string]string{}}
	for i := 0; i < 10; i++ {
		s.Namespaces[fmt.Sprintf("ns%d", i)] = map[string]string{"team": fmt.Sprintf("t%d", i%5)}
	}
	for i := 0; i < pods; i++ {
		p := policy.Pod{Namespace: fmt.Sprintf("ns%d", i%10), Name: fmt.Sprintf("pod%d", i),
			IP:     netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 2)}),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%20), "tier": fmt.Sprintf("%d", i%3)}}
		if i < 250 {
			p.HostIf = api.HostVethName(p.Name, "eth0")
		}
		s.Pods = append(s.Pods, p)
	}
	return s
}

// ProgramPolicy compiles a synthetic policy set and programs it, with
// Loom's whole firewall table, into node's namespace (no agent there).
func ProgramPolicy(node *rig.Node, pods, policies int) (PolicyResult, error) {
	var res PolicyResult
	snap := SyntheticSnapshot(pods, policies)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	compiled := policy.Compile(snap)
	res.Compile = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc > before.HeapAlloc {
		res.HeapBytes = after.HeapAlloc - before.HeapAlloc
	}
	res.LocalPods = len(compiled.Pods)
	err := ns.WithNetNSPath("/run/netns/"+node.NS, func(ns.NetNS) error {
		fw := overlay.NewNFTables()
		spec := overlay.FirewallSpec{Cluster: netip.MustParsePrefix("10.244.0.0/16"), Policy: compiled}
		start := time.Now()
		if _, err := fw.Apply(spec); err != nil {
			return fmt.Errorf("program policy: %w", err)
		}
		res.Program = time.Since(start)
		joined := snap
		joined.Pods = append(slices.Clone(snap.Pods), policy.Pod{Namespace: "ns0", Name: "remote-new",
			IP:     netip.MustParseAddr("10.244.200.2"),
			Labels: map[string]string{"app": "app1", "tier": "0"}})
		replica := snap
		first := snap.Pods[0] // local
		first.Name, first.IP, first.HostIf = "replica", netip.MustParseAddr("10.244.0.253"), api.HostVethName("replica", "eth0")
		replica.Pods = append(slices.Clone(snap.Pods), first)
		for _, step := range []struct {
			spec *policy.Compiled
			took *time.Duration
		}{{policy.Compile(joined), &res.RemoteJoin}, {compiled, &res.RemoteLeave}, {policy.Compile(replica), &res.Replica}} {
			spec.Policy = step.spec
			start := time.Now()
			if _, err := fw.Apply(spec); err != nil {
				return fmt.Errorf("program policy after a remote pod change: %w", err)
			}
			*step.took = time.Since(start)
		}
		runtime.KeepAlive(compiled)
		return fw.Teardown()
	})
	return res, err
}

// PolicyFile renders n NetworkPolicies in namespace default that all
// select every pod; only the last allows what the bench sends, so a new
// connection passes every other rule first.
func PolicyFile(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		from := fmt.Sprintf("    - ipBlock: {cidr: 192.168.%d.0/24}\n    ports: [{port: %d}]\n", i%256, 9000+i%1000)
		if i == n-1 {
			from = "    - podSelector: {}\n"
		}
		fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bench-%d}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n%s", i, from)
	}
	return b.String()
}
