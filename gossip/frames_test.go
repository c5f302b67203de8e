package gossip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fixedState serves one state and keeps what it is handed, calling
// onMerge (if set) as it merges.
type fixedState struct {
	state   []byte
	merged  [][]byte
	onMerge func()
}

func (f *fixedState) LocalState() []byte { return f.state }
func (f *fixedState) MergeRemoteState(b []byte) ([][]byte, bool, error) {
	f.merged = append(f.merged, b)
	if f.onMerge != nil {
		f.onMerge()
	}
	return nil, true, nil
}

// framesNode is a Membership with just what push/pull uses.
func framesNode(name string, pods StateExchanger, log *zap.Logger) *Membership {
	return &Membership{name: name, log: log, metrics: NewMetrics(), pods: pods, now: time.Now,
		peers: map[string]Peer{}, changes: make(chan struct{}, 1)}
}

// directoryLike is a state shaped like a large pod directory: records
// alike but for their addresses, names and versions.
func directoryLike(size int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, `{"node":"worker-%03d","ip":"10.244.%d.%d","v":%d,"ns":"payments","name":"checkout-%05x","labels":{"app":"checkout","tier":"backend"}},`,
			i/250, i/250%256, i%250+2, 1_765_000_000_000_000_000+i*7919, i*2654435761%1048576)
	}
	b.WriteString("{}]")
	return b.Bytes()
}

// frameKinds lists the kinds of a push/pull state's frames.
func frameKinds(t *testing.T, buf []byte) []byte {
	t.Helper()
	var kinds []byte
	for len(buf) > 0 {
		if len(buf) < 5 {
			t.Fatalf("%d bytes left after the last frame", len(buf))
		}
		n := binary.BigEndian.Uint32(buf[1:5])
		kinds = append(kinds, buf[0])
		buf = buf[5+n:]
	}
	return kinds
}

// A state too large for memberlist's push/pull limit goes compressed, and
// the receiver gets it back byte for byte.
func TestLargeStateTravelsCompressed(t *testing.T) {
	state := directoryLike(pushPullStateLimit + 1<<20)
	sender := framesNode("sender", &fixedState{state: state}, zap.NewNop())
	buf := (&delegate{sender}).LocalState(false)
	if len(buf) > pushPullStateLimit {
		t.Fatalf("push/pull state of %d bytes, more than memberlist's %d", len(buf), pushPullStateLimit)
	}
	if kinds := frameKinds(t, buf); !bytes.Equal(kinds, []byte{msgPods | frameDeflated, msgClock}) {
		t.Fatalf("frame kinds %x, want the pods compressed, then the clock", kinds)
	}
	var gauge dto.Metric
	if err := sender.metrics.StateBytes.Write(&gauge); err != nil || gauge.GetGauge().GetValue() != float64(len(buf)) {
		t.Fatalf("loom_gossip_state_bytes = %v (%v), want %d", gauge.GetGauge().GetValue(), err, len(buf))
	}
	pods := &fixedState{}
	(&delegate{framesNode("receiver", pods, zap.NewNop())}).MergeRemoteState(buf, false)
	if len(pods.merged) != 1 || !bytes.Equal(pods.merged[0], state) {
		t.Fatalf("the receiver merged %d states, want the sender's one, intact", len(pods.merged))
	}
}

// A state of ordinary size goes plain, as agents without compression
// read it.
func TestSmallStateTravelsPlain(t *testing.T) {
	state := directoryLike(deflateAbove - 1024)
	buf := (&delegate{framesNode("sender", &fixedState{state: state}, zap.NewNop())}).LocalState(false)
	if kinds := frameKinds(t, buf); !bytes.Equal(kinds, []byte{msgPods, msgClock}) {
		t.Fatalf("frame kinds %x, want the pods plain, then the clock", kinds)
	}
}

// A compressed frame that does not decompress, or decompresses past the
// limit, is refused with a warning; the frames after it still count.
func TestBadCompressedFrameIsRefused(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	pods := &fixedState{}
	m := framesNode("receiver", pods, zap.New(core))
	m.peers["sender"] = Peer{Record: NodeRecord{Name: "sender"}}
	clock := framesNode("sender", nil, zap.NewNop()).clockFrame()
	buf := appendFrame(nil, msgPods|frameDeflated, []byte("not deflate"))
	buf = appendFrame(buf, msgClock, clock)
	(&delegate{m}).MergeRemoteState(buf, false)
	if len(pods.merged) != 0 {
		t.Fatalf("merged %q from a corrupt frame", pods.merged)
	}
	if n := logs.FilterMessage("rejected gossiped state").Len(); n != 1 {
		t.Fatalf("%d rejections logged, want 1", n)
	}
	if _, ok := m.clockOffsets["sender"]; !ok {
		t.Fatal("the clock frame after the corrupt one was not read")
	}

	z, err := deflate(make([]byte, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inflate(z, 1<<20-1); err == nil {
		t.Fatal("a frame inflating past the limit was accepted")
	}
	if b, err := inflate(z, 1<<20); err != nil || len(b) != 1<<20 {
		t.Fatalf("a frame inflating to the limit: %d bytes, %v", len(b), err)
	}
}

// A compressed frame of a kind this agent does not know is skipped
// unread, as an older agent skips every compressed frame.
func TestUnknownCompressedKindIsSkipped(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	pods := &fixedState{}
	m := framesNode("receiver", pods, zap.New(core))
	buf := appendFrame(nil, 99|frameDeflated, []byte("future"))
	buf = appendFrame(buf, msgPods, []byte("pods"))
	(&delegate{m}).MergeRemoteState(buf, false)
	if len(pods.merged) != 1 || string(pods.merged[0]) != "pods" {
		t.Fatalf("merged %q, want only the pods frame", pods.merged)
	}
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d lines logged about a frame to skip", n)
	}
}

// A state over memberlist's limit even compressed is an error worth an
// operator's attention, said once in a while; one near it a warning.
func TestOversizedStateIsReported(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	m := framesNode("here", &fixedState{}, zap.New(core))
	m.noteStateSize(1<<20, 10<<20)
	if logs.Len() != 0 {
		t.Fatalf("a 1 MiB state was reported: %v", logs.All())
	}
	m.noteStateSize(pushPullStateLimit+1, 10<<20)
	m.noteStateSize(pushPullStateLimit+2, 10<<20)
	errs := logs.FilterLevelExact(zap.ErrorLevel).All()
	if len(errs) != 1 || errs[0].ContextMap()["bytes"] != int64(pushPullStateLimit+1) {
		t.Fatalf("errors %v, want one, of the first oversized state", errs)
	}
	m = framesNode("here", &fixedState{}, zap.New(core))
	m.noteStateSize(13<<20, 1)
	if warns := logs.FilterLevelExact(zap.WarnLevel).All(); len(warns) != 1 {
		t.Fatalf("warnings %v, want one, of a state at 65 %% of the limit", warns)
	}
	// Small once compressed, but more than a peer inflates.
	m = framesNode("here", &fixedState{}, zap.New(core))
	m.noteStateSize(4<<20, maxInflatedState+1)
	if errs := logs.FilterLevelExact(zap.ErrorLevel).All(); len(errs) != 2 {
		t.Fatalf("errors %v, want one more, of a state that inflates past the limit", errs)
	}
}

// A change of the pod directory is signalled on PodChanges, a change of
// the lease table on Changes: only policy reads other nodes' pods, so
// their churn must not wake what follows membership and leases.
func TestPodChangesAreSignalledApart(t *testing.T) {
	m := framesNode("here", &fixedState{}, zap.NewNop())
	m.state = &fixedState{}
	m.podChanges, m.podNews = make(chan struct{}, 1), make(chan struct{}, 1)
	pending := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	m.merge(msgPods, []byte("[]"), viaBroadcast)
	if pending(m.Changes()) || !pending(m.PodChanges()) {
		t.Fatal("a pod directory change was not signalled on PodChanges alone")
	}
	m.merge(msgState, []byte("{}"), viaBroadcast)
	if !pending(m.Changes()) || pending(m.PodChanges()) {
		t.Fatal("a lease table change was not signalled on Changes alone")
	}
	if pending(m.PodNews()) {
		t.Fatal("gossiped pod directory changes were signalled as news on PodNews")
	}
}

// Pod directory updates sent straight to a node (BroadcastPods' first)
// are signalled on PodNews alone, and what they make the node relay goes
// on as ordinary gossip: a node that relayed them as news would make
// every node it reaches hurry.
func TestDirectPodNewsIsSignalledApartAndRelayedAsGossip(t *testing.T) {
	pods := &relayingState{}
	m := framesNode("here", pods, zap.NewNop())
	m.podChanges, m.podNews = make(chan struct{}, 1), make(chan struct{}, 1)
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 2 }, RetransmitMult: 1}
	d := &delegate{m: m}
	d.NotifyMsg(append([]byte{msgPodsDirect}, `[{"node":"there"}]`...))
	select {
	case <-m.PodNews():
	default:
		t.Fatal("a pod directory change sent directly was not signalled on PodNews")
	}
	select {
	case <-m.PodChanges():
		t.Fatal("a pod directory change sent directly was signalled on PodChanges too")
	case <-m.Changes():
		t.Fatal("a pod directory change sent directly was signalled on Changes")
	default:
	}
	if len(pods.merged) != 1 || string(pods.merged[0]) != `[{"node":"there"}]` {
		t.Fatalf("pod directory merged %q, want the update sent", pods.merged)
	}
	relayed := m.queue.GetBroadcasts(0, 1400)
	if len(relayed) != 1 || relayed[0][0] != msgPods {
		t.Fatalf("relayed %q, want the update once as gossip (kind %d)", relayed, msgPods)
	}
}

// relayingState merges every update as a change and relays it whole.
type relayingState struct{ fixedState }

func (r *relayingState) MergeRemoteState(b []byte) ([][]byte, bool, error) {
	r.merged = append(r.merged, b)
	return [][]byte{b}, true, nil
}
