package gossip

import (
	"testing"

	"github.com/hashicorp/memberlist"
)

func BenchmarkNodeRecordEncode(b *testing.B) {
	r := sampleRecord()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := r.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNodeRecordDecode(b *testing.B) {
	enc, _ := sampleRecord().Encode()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeNodeRecord(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueueBroadcasts queues as many broadcasts as a node that joined
// a fabric of 10,000 pods might relay; memberlist compares each
// broadcast that is not a UniqueBroadcast with every one queued.
func BenchmarkQueueBroadcasts(b *testing.B) {
	msg := broadcast(make([]byte, 200))
	b.ReportAllocs()
	for b.Loop() {
		q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 50 }, RetransmitMult: 4}
		for range 10_000 {
			q.QueueBroadcast(msg)
		}
	}
}
