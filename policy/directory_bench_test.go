package policy

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// largeDirectory returns records of nodes×perNode pods with
// Kubernetes-like names and labels, as many pods of a large fabric.
func largeDirectory(nodes, perNode int) []PodRecord {
	now := time.Now()
	var recs []PodRecord
	for i := range nodes {
		for p := range perNode {
			seq := i*perNode + p
			recs = append(recs, PodRecord{Node: fmt.Sprintf("worker-%03d.example.internal", i),
				IP:      netip.AddrFrom4([4]byte{10, byte(i / 200), byte(i % 200), byte(p + 2)}),
				Version: uint64(now.UnixNano()) + uint64(seq), Since: now.Unix(),
				Namespace: "payments", Name: fmt.Sprintf("checkout-api-7d9f8c6b5-%05x", seq*2654435761%1048576),
				Labels: map[string]string{"app.kubernetes.io/name": "checkout-api", "pod-template-hash": "7d9f8c6b5", "tier": "backend"}})
		}
	}
	return recs
}

// BenchmarkDirectoryPushPull100000: one push/pull's work on the pod
// directory of 100,000 pods, both sides knowing them all and one node's
// pod having changed since the last: the sender's state and the
// receiver's merge, whole (as from an agent that sends no index) and
// through the index, in the same run.
func BenchmarkDirectoryPushPull100000(b *testing.B) {
	recs := largeDirectory(500, 200)
	sender, receiver := NewDirectory("sender", nil), NewDirectory("receiver", nil)
	for _, d := range []*Directory{sender, receiver} {
		if _, _, err := d.mergeRecords(recs); err != nil {
			b.Fatal(err)
		}
		d.LocalState()
	}
	change := func(i int) {
		r := recs[i%len(recs)]
		r.Version = uint64(time.Now().UnixNano())
		r.Labels = map[string]string{"app": fmt.Sprint(i)}
		if _, _, err := sender.mergeRecords([]PodRecord{r}); err != nil {
			b.Fatal(err)
		}
	}
	for _, indexed := range []bool{false, true} {
		b.Run(fmt.Sprintf("indexed=%v", indexed), func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				change(i)
				state, index := sender.LocalStateIndexed()
				var changed bool
				var err error
				if indexed {
					_, changed, err = receiver.MergeIndexedState(state, index)
				} else {
					_, changed, err = receiver.MergeRemoteState(state)
				}
				if err != nil || !changed {
					b.Fatalf("merge: changed %v, %v", changed, err)
				}
			}
		})
	}
}

// BenchmarkDirectoryHeap100000: the heap a directory of 100,000 pods
// holds, merged from a peer's full state, per record: the records alone
// and with the full state it keeps for its own push/pulls. The pods carry
// a few label sets, as the replicas of a fabric's workloads do.
func BenchmarkDirectoryHeap100000(b *testing.B) {
	const pods = 100000
	sender := NewDirectory("sender", nil)
	if _, _, err := sender.mergeRecords(largeDirectory(500, pods/500)); err != nil {
		b.Fatal(err)
	}
	state := sender.LocalState()
	sender = nil
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	var records, withState int64
	for b.Loop() {
		before := heap()
		d := NewDirectory("receiver", nil)
		if _, _, err := d.MergeRemoteState(state); err != nil {
			b.Fatal(err)
		}
		records = heap() - before
		d.LocalStateIndexed()
		withState = heap() - before
		runtime.KeepAlive(d)
	}
	b.ReportMetric(float64(records)/pods, "B/record")
	b.ReportMetric(float64(withState)/pods, "B/record-with-state")
}
