package overlay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A subscribe function opens a group of kernel notification subscriptions
// and returns once they are open. They stay open until ctx ends; when one
// of them ends before that, it calls lost with the reason. It may call
// lost more than once, and from any goroutine.
type subscribeFunc func(ctx context.Context, lost func(error)) error

// Bounds of the wait before subscribing again after a subscription was
// lost. The wait doubles while losses follow each other within
// lossesApart, so a reader that cannot keep up (or a missed() that itself
// floods the group, as a full nftables rewrite does) settles into one
// attempt every resubscribeMaxWait instead of a loop.
const (
	resubscribeMinWait = 200 * time.Millisecond
	resubscribeMaxWait = 30 * time.Second
	lossesApart        = time.Minute
)

// keepSubscribed opens subscribe's subscriptions and keeps them open until
// ctx ends. The kernel ends a subscription whose reader fell behind: once
// its socket buffer is full it drops notifications and fails the next
// receive with ENOBUFS, and the readers of vishvananda/netlink and
// google/nftables stop there for good. Then keepSubscribed reports the
// loss through onError, subscribes again and calls missed, because
// whatever happened in between went unseen. It returns the first
// subscription's error, or nil once it is open.
func keepSubscribed(ctx context.Context, subscribe subscribeFunc, missed func(), onError func(error)) error {
	cancel, lost, err := openSubscription(ctx, subscribe)
	if err != nil {
		return err
	}
	go func() {
		wait, opened := resubscribeMinWait, time.Now()
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case err := <-lost:
				cancel()
				onError(err)
			}
			if time.Since(opened) > lossesApart {
				wait = resubscribeMinWait
			}
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, resubscribeMaxWait)
				cancel, lost, err = openSubscription(ctx, subscribe)
				if err == nil {
					break
				}
				onError(fmt.Errorf("subscribe again: %w", err))
			}
			opened = time.Now()
			missed()
		}
	}()
	return nil
}

// openSubscription runs subscribe under a context of its own, so that
// ending it closes every subscription of the group, and returns the
// channel that receives the first loss while it is open.
func openSubscription(ctx context.Context, subscribe subscribeFunc) (context.CancelFunc, <-chan error, error) {
	sctx, cancel := context.WithCancel(ctx)
	lost := make(chan error, 1)
	report := func(err error) {
		// Closing a subscription's socket fails its pending receive:
		// that is the group being closed, not a loss.
		if sctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("subscription closed")
		}
		select {
		case lost <- err:
		default:
		}
	}
	if err := subscribe(sctx, report); err != nil {
		cancel()
		return nil, nil, err
	}
	return cancel, lost, nil
}

// lastError keeps the latest error a subscription's reader reported.
// vishvananda/netlink's readers report errors they go on after (a message
// they cannot parse) through the same callback as the one that ends them,
// so only the closing of the update channel tells that one ended; this
// says why.
type lastError struct {
	mu  sync.Mutex
	err error
}

func (l *lastError) set(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *lastError) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
