package overlay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeGroup is a subscription group a test ends at will.
type fakeGroup struct {
	opened  atomic.Int32
	closed  atomic.Int32
	fail    atomic.Int32 // opens to refuse before one succeeds
	current chan func(error)
}

func (g *fakeGroup) subscribe(ctx context.Context, lost func(error)) error {
	if g.fail.Load() > 0 {
		g.fail.Add(-1)
		return errors.New("socket refused")
	}
	g.opened.Add(1)
	go func() { <-ctx.Done(); g.closed.Add(1) }()
	g.current <- lost
	return nil
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeepSubscribedOpensALostGroupAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &fakeGroup{current: make(chan func(error), 4)}
	var missed atomic.Int32
	errs := make(chan error, 8)
	if err := keepSubscribed(ctx, g.subscribe, func() { missed.Add(1) }, func(err error) { errs <- err }); err != nil {
		t.Fatal(err)
	}
	lost := <-g.current
	if missed.Load() != 0 {
		t.Fatal("missed called before anything was lost")
	}

	enobufs := errors.New("recvmsg: no buffer space available")
	lost(enobufs)
	lost(errors.New("a second reader of the group ends too"))
	if err := <-errs; err != enobufs {
		t.Fatalf("reported %v, want the first loss", err)
	}
	lost = <-g.current
	waitFor(t, "missed is called after subscribing again", func() bool { return missed.Load() == 1 })
	if g.closed.Load() != 1 {
		t.Fatalf("%d groups closed, want the lost one", g.closed.Load())
	}
	select {
	case err := <-errs:
		t.Fatalf("a second loss reported for one group: %v", err)
	default:
	}

	// A group that cannot be opened again is retried.
	g.fail.Store(2)
	lost(enobufs)
	<-g.current
	waitFor(t, "missed is called once the group is open again", func() bool { return missed.Load() == 2 })
	if g.opened.Load() != 3 {
		t.Fatalf("opened %d times, want 3", g.opened.Load())
	}
	if n := len(errs); n != 3 {
		t.Fatalf("%d errors reported, want the loss and two refusals", n)
	}

	cancel()
	waitFor(t, "the open group is closed with ctx", func() bool { return g.closed.Load() == 3 })
}

func TestClosedGroupReportsNoLoss(t *testing.T) {
	var report func(error)
	cancel, lost, err := openSubscription(context.Background(), func(_ context.Context, l func(error)) error {
		report = l
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	report(errors.New("closing the socket fails the pending receive"))
	select {
	case err := <-lost:
		t.Fatalf("closing the group was reported as a loss: %v", err)
	default:
	}
}

func TestKeepSubscribedReturnsTheFirstError(t *testing.T) {
	g := &fakeGroup{current: make(chan func(error), 1)}
	g.fail.Store(1)
	if err := keepSubscribed(context.Background(), g.subscribe, func() {}, func(error) {}); err == nil {
		t.Fatal("a group that cannot be opened was reported open")
	}
}
