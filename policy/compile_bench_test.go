package policy

import (
	"fmt"
	"net/netip"
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
	b.ReportAllocs()
	for b.Loop() {
		Compile(snap)
	}
}
