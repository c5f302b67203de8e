package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// largeView encodes a view of pods pods in 50 namespaces, the replicas of
// 500 workloads (each its own labels and a named port), as the helper
// sends it.
func largeView(b *testing.B, pods int) []byte {
	var in []Pod
	for i := range pods {
		app := i % 500
		in = append(in, Pod{Namespace: fmt.Sprintf("team-%02d", app%50), Name: fmt.Sprintf("app-%03d-7d9f8c6b5-%05x", app, i),
			IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Labels: map[string]string{"app.kubernetes.io/name": fmt.Sprintf("app-%03d", app),
				"pod-template-hash": fmt.Sprintf("7d9f8c%03d", app), "tier": "backend"},
			NamedPorts: map[string]NamedPort{"http": {Protocol: "TCP", Port: 8080}}})
	}
	var buf bytes.Buffer
	if err := WriteClusterView(&buf, NewClusterView(nil, nil, in)); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkReadClusterView100000: loomd reading one view of 100,000 pods
// from the helper, and the heap the view holds per pod while it is in
// force.
func BenchmarkReadClusterView100000(b *testing.B) {
	const pods = 100000
	view := largeView(b, pods)
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	var held int64
	for b.Loop() {
		b.StopTimer()
		before := heap()
		b.StartTimer()
		var kept ClusterView
		if err := ReadClusterViews(bytes.NewReader(view), func(v ClusterView) { kept = v }); err != nil || len(kept.Pods) != pods {
			b.Fatalf("read %d pods: %v", len(kept.Pods), err)
		}
		b.StopTimer()
		held = heap() - before
		runtime.KeepAlive(kept)
		b.StartTimer()
	}
	b.ReportMetric(float64(held)/pods, "B/pod")
}
