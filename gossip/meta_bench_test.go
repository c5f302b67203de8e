package gossip

import "testing"

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
