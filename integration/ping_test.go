package integration

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestRigPingTellsReplyFromSilence: every reachability check of these
// tests, and the bench's convergence figures, rest on rig.Ping. It must
// succeed only on a reply from the address pinged: not for a silent
// address while another pinger in the same namespace gets replies from a
// live one, and never for a namespace that does not exist.
func TestRigPingTellsReplyFromSilence(t *testing.T) {
	r := newRig(t)
	a, err := r.AddNode("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.AddNode("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(10*time.Second, func() error { return rig.Ping(a.NS, b.Addr) }); err != nil {
		t.Fatal(err)
	}

	silent := netip.AddrFrom4([4]byte{10, 200, 0, 250}) // on the switch's subnet, never handed out here
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var liveErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := rig.PingWithin(a.NS, b.Addr, time.Second); err != nil {
				liveErr = err
				return
			}
		}
	}()
	err = rig.PingWithin(a.NS, silent, 500*time.Millisecond)
	close(stop)
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), "no reply") {
		t.Errorf("ping %s, which nothing answers: got %v, want no reply", silent, err)
	}
	if liveErr != nil {
		t.Errorf("ping %s alongside: %v", b.Addr, liveErr)
	}

	err = rig.Ping("loom-no-such-netns", b.Addr)
	if err == nil || !strings.Contains(err.Error(), "/run/netns/loom-no-such-netns") {
		t.Errorf("ping from a namespace that does not exist: got %v, want an error naming it", err)
	}
}
