package integration

import (
	"fmt"
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

// TestPingLossesReadsPingOutput: the lossless-restart and key-rotation
// tests rest on pingLosses; it must pass only when every echo was
// answered, and name the gap when one was not.
func TestPingLossesReadsPingOutput(t *testing.T) {
	reply := func(seq int) string {
		return fmt.Sprintf("[1765000000.%06d] 64 bytes from 10.244.1.2: icmp_seq=%d ttl=62 time=0.081 ms\n", seq*10000, seq)
	}
	run := func(seqs []int, transmitted, received int) string {
		var b strings.Builder
		b.WriteString("PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.\n")
		for _, s := range seqs {
			b.WriteString(reply(s))
		}
		fmt.Fprintf(&b, "\n--- 10.244.1.2 ping statistics ---\n%d packets transmitted, %d received, 0%% packet loss, time 60ms\n", transmitted, received)
		return b.String()
	}
	all := []int{1, 2, 3, 4, 5}
	if err := pingLosses(run(all, 5, 5), 5); err != nil {
		t.Fatalf("every echo answered: %v", err)
	}
	for _, c := range []struct {
		name, out, want string
	}{
		{"a gap", run([]int{1, 2, 4, 5}, 5, 4), "icmp_seq [3]"},
		{"the last unanswered", run([]int{1, 2, 3, 4}, 5, 4), "icmp_seq [5]"},
		{"fewer sent than asked", run([]int{1, 2, 3}, 3, 3), "icmp_seq [4 5]"},
		{"a summary that disagrees", run(all, 6, 5), "6 packets transmitted, 5 received"},
		{"no summary", "ping: connect: Network is unreachable\n", "no ping summary"},
	} {
		err := pingLosses(c.out, 5)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	if err := pingLosses(run([]int{1, 2, 4, 5}, 5, 4), 5); !strings.Contains(err.Error(), `replies to 2 at "`) {
		t.Errorf("a gap should say when the replies around it came: %v", err)
	}
}
