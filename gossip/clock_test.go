package gossip

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// clockNode is a Membership with just what the clock exchange uses.
func clockNode(name string, now time.Time, log *zap.Logger) *Membership {
	return &Membership{name: name, log: log, metrics: NewMetrics(), now: func() time.Time { return now },
		peers: map[string]Peer{}}
}

// A push/pull carries the sender's clock; the receiver records the offset
// for the sender, and warns once when it is beyond MaxClockOffset.
func TestPushPullCarriesTheClock(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	now := time.Unix(1_800_000_000, 0)
	here := clockNode("here", now, zap.New(core))
	ahead := clockNode("ahead", now.Add(2*time.Hour+3*time.Second), zap.NewNop())
	near := clockNode("close", now.Add(-2*time.Second), zap.NewNop())
	here.peers["ahead"] = Peer{Record: NodeRecord{Name: "ahead"}}
	here.peers["close"] = Peer{Record: NodeRecord{Name: "close"}}

	for i := 0; i < 3; i++ {
		(&delegate{here}).MergeRemoteState((&delegate{ahead}).LocalState(false), false)
		(&delegate{here}).MergeRemoteState((&delegate{near}).LocalState(false), false)
	}
	if got := here.clockOffsets["ahead"]; got != 2*time.Hour+3*time.Second {
		t.Fatalf("offset of ahead = %v, want 2h0m3s", got)
	}
	if got := here.clockOffsets["close"]; got != -2*time.Second {
		t.Fatalf("offset of close = %v, want -2s", got)
	}
	warned := logs.FilterMessageSnippet("clock differs").All()
	if len(warned) != 1 || warned[0].ContextMap()["node"] != "ahead" {
		t.Fatalf("warnings: %v, want one, about ahead", warned)
	}
	// A malformed frame is ignored, not trusted.
	if err := here.noteClock([]byte{1, 2, 3}, now); err == nil {
		t.Fatal("a 3-byte clock frame was accepted")
	}
}

// Merging the states that come before the clock frame takes the
// receiver's time (seconds for a large pod directory); it is no part of
// the sender's clock offset, and used to be taken for one.
func TestSlowMergeIsNoClockOffset(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	now := time.Unix(1_800_000_000, 0)
	sender := clockNode("sender", now, zap.NewNop())
	sender.pods = &fixedState{state: []byte("[]")}
	here := clockNode("here", now, zap.New(core))
	here.now = func() time.Time { return now }
	here.pods = &fixedState{onMerge: func() { now = now.Add(time.Minute) }}
	here.peers["sender"] = Peer{Record: NodeRecord{Name: "sender"}}
	here.changes = make(chan struct{}, 1)

	(&delegate{here}).MergeRemoteState((&delegate{sender}).LocalState(false), false)
	if got, ok := here.clockOffsets["sender"]; !ok || got != 0 {
		t.Fatalf("offset of sender = %v (recorded: %v), want 0", got, ok)
	}
	if logs.Len() != 0 {
		t.Fatalf("warned: %v", logs.All())
	}
}
