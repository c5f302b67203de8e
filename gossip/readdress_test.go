package gossip

import (
	"net"
	"net/netip"
	"testing"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func newTestAnnouncer(t *testing.T) (*addressAnnouncer, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	m := &Membership{name: "node3", advertise: netip.MustParseAddr("10.0.0.4"), port: 7946, log: zap.New(core)}
	m.announcer = newAddressAnnouncer(m)
	t.Cleanup(m.announcer.stop)
	return m.announcer, logs
}

func (a *addressAnnouncer) isRunning() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running
}

// A peer's view that holds this node where it is (in memberlist's 16-byte
// form) starts nothing; one that holds it at another address starts the
// announcements, once.
func TestMergeViewStartsAnnouncingOnlyWhenStale(t *testing.T) {
	a, logs := newTestAnnouncer(t)
	view := []*memberlist.Node{
		{Name: "node1", Addr: net.ParseIP("10.0.0.1"), Port: 7946},
		{Name: "node3", Addr: net.ParseIP("10.0.0.4"), Port: 7946},
	}
	if err := (mergeDelegate{a}).NotifyMerge(view); err != nil {
		t.Fatalf("NotifyMerge refused a merge: %v", err)
	}
	if a.isRunning() {
		t.Fatal("announcing although the peer holds this node at its address")
	}
	view[1].Addr = net.ParseIP("10.0.0.3")
	for range 3 {
		if err := (mergeDelegate{a}).NotifyMerge(view); err != nil {
			t.Fatalf("NotifyMerge refused a merge: %v", err)
		}
	}
	if !a.isRunning() {
		t.Fatal("not announcing although the peer holds this node at 10.0.0.3")
	}
	if n := logs.FilterMessageSnippet("announcing the new one").Len(); n != 1 {
		t.Fatalf("start of the announcements logged %d times, want once", n)
	}
}

// A conflict about another node is logged once per new address, however
// many messages carry it.
func TestConflictLoggedOncePerAddress(t *testing.T) {
	a, logs := newTestAnnouncer(t)
	old := &memberlist.Node{Name: "node2", Addr: net.ParseIP("10.0.0.2"), Port: 7946}
	for _, addr := range []string{"10.0.0.7", "10.0.0.7", "10.0.0.7", "10.0.0.8"} {
		(conflictDelegate{a}).NotifyConflict(old, &memberlist.Node{Name: "node2", Addr: net.ParseIP(addr), Port: 7946})
	}
	if n := logs.FilterMessageSnippet("new underlay address").Len(); n != 2 {
		t.Fatalf("logged %d times, want 2 (one per new address)", n)
	}
	if a.isRunning() {
		t.Fatal("a conflict about another node started this node's announcements")
	}
}

// A message speaking of this node at another address may come from another
// node running under its name: it fetches peers' views (starts the rounds)
// but claims nothing until a view holds this node elsewhere.
func TestConflictAboutSelfOnlyStartsRounds(t *testing.T) {
	a, logs := newTestAnnouncer(t)
	self := &memberlist.Node{Name: "node3", Addr: net.ParseIP("10.0.0.4"), Port: 7946}
	(conflictDelegate{a}).NotifyConflict(self, &memberlist.Node{Name: "node3", Addr: net.ParseIP("10.0.0.9"), Port: 7946})
	if !a.isRunning() {
		t.Fatal("a conflict about this node started no rounds")
	}
	a.mu.Lock()
	stale, held := a.stale, a.heldAt
	a.mu.Unlock()
	if stale || held.IsValid() || logs.Len() != 0 {
		t.Fatalf("after a conflict alone: stale %v, held at %v, %d log lines; want none", stale, held, logs.Len())
	}
}
