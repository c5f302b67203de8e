package gossip

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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

// failingState rejects every update, as a node with another pod space
// rejects its peers' claims on every exchange.
type failingState struct{}

func (failingState) LocalState() []byte { return nil }
func (failingState) MergeRemoteState([]byte) ([][]byte, bool, error) {
	return nil, false, errors.New("subnet 10.245.3.0/24 is outside cluster CIDR 10.244.0.0/16")
}

func TestRejectedStateIsWarnedOnce(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	m := &Membership{name: "here", log: zap.New(core), metrics: NewMetrics(), state: failingState{}, now: time.Now}
	for i := 0; i < 5; i++ {
		m.merge(msgState, []byte("{}"), viaPushPull)
	}
	rejected := logs.FilterMessage("rejected gossiped state")
	if n := rejected.Len(); n != 5 {
		t.Fatalf("%d rejections logged, want 5", n)
	}
	if n := rejected.FilterLevelExact(zap.WarnLevel).Len(); n != 1 {
		t.Fatalf("%d rejections logged as warnings, want 1 (the rest at debug)", n)
	}
}
