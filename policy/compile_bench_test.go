package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkCompile compiles 100 policies over 1,000 pods, 250 of them
// local: the work of one reconcile after a policy or pod change.
func BenchmarkCompile(b *testing.B) { benchmarkCompile(b, 1000) }

// BenchmarkCompile100000 is the same in a fabric of 100,000 pods: each of
// another node's pods coming or going under policy costs one.
func BenchmarkCompile100000(b *testing.B) { benchmarkCompile(b, 100000) }

// benchmarkCompile compiles 100 policies over pods pods in ten namespaces,
// the first 250 local.
func benchmarkCompile(b *testing.B, pods int) {
	snap := benchSnapshot(pods)
	b.ReportAllocs()
	for b.Loop() {
		Compile(snap)
	}
}

// BenchmarkWatchers100000 finds the nodes to tell of a new pod at once in
// a fabric of 100,000 pods on 1,000 nodes: the work of each ADD under
// policies from files.
func BenchmarkWatchers100000(b *testing.B) {
	snap := benchSnapshot(100000)
	pod := Pod{Namespace: "ns0", Name: "new", IP: netip.MustParseAddr("10.255.0.2"), Labels: map[string]string{"app": "app1", "tier": "0"}}
	if len(Watchers(snap, []Pod{pod}, slices.Values(snap.Pods), 32)) != 32 {
		b.Fatal("the new pod has fewer than 32 watchers")
	}
	b.ReportAllocs()
	for b.Loop() {
		Watchers(snap, []Pod{pod}, slices.Values(snap.Pods), 32)
	}
}

// benchSnapshot is 100 policies over pods pods in ten namespaces, the
// first 250 local, the others on nodes of 100 pods each.
func benchSnapshot(pods int) Snapshot {
	snap := Snapshot{Namespaces: map[string]map[string]string{}}
	for i := 0; i < 10; i++ {
		snap.Namespaces[fmt.Sprintf("ns%d", i)] = map[string]string{"team": fmt.Sprintf("t%d", i%5)}
	}
	for i := 0; i < pods; i++ {
		p := Pod{Namespace: fmt.Sprintf("ns%d", i%10), Name: fmt.Sprintf("pod%d", i),
			IP:     netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%20), "tier": fmt.Sprintf("%d", i%3)}}
		if i < 250 {
			p.HostIf = fmt.Sprintf("loom%011d", i)
		} else {
			p.Node = fmt.Sprintf("node%d", i/100)
		}
		snap.Pods = append(snap.Pods, p)
	}
	for i := 0; i < 100; i++ {
		snap.Policies = append(snap.Policies, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: fmt.Sprintf("ns%d", i%10)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%20)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("%d", i%3)}},
				}}}},
			},
		})
	}
	return snap
}
