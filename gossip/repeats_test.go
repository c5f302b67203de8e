package gossip

import (
	"fmt"
	"testing"
	"time"
)

func TestRepeatedWarningsAreKeptQuiet(t *testing.T) {
	var r repeats
	now := time.Unix(1_000_000, 0)
	if !r.fresh("a", now) || r.fresh("a", now.Add(time.Minute)) || !r.fresh("b", now) {
		t.Fatal("a message must be fresh once, then quiet; another one fresh")
	}
	if !r.fresh("a", now.Add(repeatWindow)) {
		t.Fatal("a message must be fresh again after the window")
	}
	for i := 0; i < 1000; i++ {
		r.fresh(fmt.Sprint(i), now)
	}
	if len(r.seen) > 256 {
		t.Fatalf("%d remembered messages: unbounded", len(r.seen))
	}
}
