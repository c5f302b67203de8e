package ipam

import (
	"fmt"
	"testing"
)

// BenchmarkSaveDirectory100000 saves 100,000 other nodes' pod records at
// once into an empty store, as a node does after it joined a fabric of
// that many pods.
func BenchmarkSaveDirectory100000(b *testing.B) {
	put := map[string][]byte{}
	for i := range 100000 {
		put[fmt.Sprintf("10.244.%d.%d worker-%03d", i/250%256, i%250+2, i/250)] = make([]byte, 260)
	}
	for b.Loop() {
		b.StopTimer()
		st, err := OpenStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := st.SaveDirectory(put, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		st.Close()
		b.StartTimer()
	}
}
