package gossip

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Config configures the membership layer.
type Config struct {
	// NodeName is this node's unique name in the fabric.
	NodeName string
	// AdvertiseAddr is the underlay address peers use to reach this node.
	AdvertiseAddr netip.Addr
	// Port is the gossip port (TCP and UDP), the same on every node.
	Port int
	// Keys are AES keys (16, 24 or 32 bytes) for encrypted, authenticated
	// gossip; the first is used to encrypt. Empty means plain gossip, which the
	// agent allows only on an explicit opt-out.
	Keys [][]byte
	// Profile selects memberlist's timing: "lan" (default) or "wan".
	Profile string
	// State is the replicated state carried by push/pull and broadcasts.
	State StateExchanger
	// Pods is a second replicated state, the pod directory network policy
	// resolves selectors with; nil leaves it out.
	Pods StateExchanger
	// Logger receives structured logs; memberlist's own lines are forwarded.
	Logger *zap.Logger
	// Metrics receives gossip traffic counters; nil disables them.
	Metrics *Metrics
	// ValidateRecord vets every peer's record before it is used; a
	// rejected peer is logged, counted and ignored. Nil accepts all.
	ValidateRecord func(NodeRecord) error
	// OnKeyringChange is called with the keys (primary first) whenever a
	// keyring operation changed them, so they can be persisted.
	OnKeyringChange func(keys [][]byte)
	// OnNameInUse is called (once) when another live node turns out to run
	// under this node's name, with its address (see NameInUse).
	OnNameInUse func(other netip.Addr)
}

// Membership is a running memberlist plus Loom's view of its peers.
type Membership struct {
	validate func(NodeRecord) error
	name     string
	// advertise and port are where peers reach this node.
	advertise netip.Addr
	port      int
	log       *zap.Logger
	metrics   *Metrics
	state     StateExchanger
	pods      StateExchanger
	// rejected keeps repeated "rejected gossiped state" warnings quiet.
	rejected repeats
	ml       *memberlist.Memberlist
	queue    *memberlist.TransmitLimitedQueue
	// deflated keeps the last compressed push/pull frames.
	deflated deflatedFrames

	// localMu guards localMeta, the encoded record served to memberlist.
	localMu   sync.Mutex
	localMeta []byte

	// peersMu guards peers, keyed by node name, and clockOffsets: how far
	// each peer's clock was from this node's at its last push/pull.
	peersMu      sync.Mutex
	peers        map[string]Peer
	clockOffsets map[string]time.Duration
	// now is the wall clock (tests move it).
	now func() time.Time

	// changes, podChanges and podNews signal, coalesced, what Changes,
	// PodChanges and PodNews say.
	changes, podChanges, podNews chan struct{}

	keyring keyringState
	// announcer makes peers that hold this node at an old address take
	// the new one.
	announcer   *addressAnnouncer
	onNameInUse func(other netip.Addr)
	// started holds ml once Create has returned, for callbacks that may
	// run before (m.ml is for the agent's calls, made after Start).
	started atomic.Pointer[memberlist.Memberlist]
}

func errNameMismatch(record, member string) error {
	return fmt.Errorf("record names node %q but memberlist names it %q", record, member)
}

// PortInUseError is returned by Start when another process holds the
// gossip port (Docker Swarm's gossip also uses 7946).
type PortInUseError struct {
	Port int
	// Detail is memberlist's account of the failed bind.
	Detail string
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("gossip port %d is in use on this node: %s", e.Port, e.Detail)
}

// Start creates the memberlist and begins listening. The node is alone
// until Join is called.
func Start(cfg Config, local NodeRecord) (*Membership, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	meta, err := local.Encode()
	if err != nil {
		return nil, err
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	installMemberlistSink(cfg.Metrics)
	m := &Membership{
		validate:    cfg.ValidateRecord,
		metrics:     cfg.Metrics,
		name:        cfg.NodeName,
		advertise:   cfg.AdvertiseAddr,
		port:        cfg.Port,
		onNameInUse: cfg.OnNameInUse,
		log:         cfg.Logger,
		state:       cfg.State,
		pods:        cfg.Pods,
		localMeta:   meta,
		peers:       map[string]Peer{},
		now:         time.Now,
		changes:     make(chan struct{}, 1),
		podChanges:  make(chan struct{}, 1),
		podNews:     make(chan struct{}, 1),
		keyring:     keyringState{onChange: cfg.OnKeyringChange, pending: map[string]chan KeyringResult{}},
	}
	var mlc *memberlist.Config
	switch cfg.Profile {
	case "", "lan":
		mlc = memberlist.DefaultLANConfig()
		// Broadcasts reach every node only with high probability; the full
		// state exchange is what guarantees it. Loom's state is small (one
		// record and one lease per node), so it syncs every 10 s instead of
		// 30 s: a node that missed a peer's update catches up within that.
		// memberlist still stretches the interval for clusters above 32 nodes.
		mlc.PushPullInterval = 10 * time.Second
		// A change (a new node's record and lease) reaches everyone in about
		// log₃ N gossip rounds; 100 ms rounds instead of 200 ms bring a join
		// at N = 50 under a second. memberlist gossips only when something
		// is queued, so an idle fabric sends no more than before.
		mlc.GossipInterval = 100 * time.Millisecond
	case "wan":
		mlc = memberlist.DefaultWANConfig()
	default:
		return nil, fmt.Errorf("unknown gossip profile %q (want lan or wan)", cfg.Profile)
	}
	mlc.Name = cfg.NodeName
	mlc.BindAddr = "0.0.0.0"
	if cfg.AdvertiseAddr.Is6() {
		mlc.BindAddr = "::"
	}
	mlc.BindPort = cfg.Port
	mlc.AdvertiseAddr = cfg.AdvertiseAddr.String()
	mlc.AdvertisePort = cfg.Port
	mlc.Delegate = &delegate{m: m}
	mlc.Events = &events{m: m}
	m.announcer = newAddressAnnouncer(m)
	mlc.Conflict = conflictDelegate{m.announcer}
	mlc.Merge = mergeDelegate{m.announcer}
	mlc.Logger = log.New(&logWriter{log: cfg.Logger, keyFailures: cfg.Metrics.KeyFailures}, "", 0)
	// A node back under its name at another address is taken a second after
	// its old entry is declared dead (see addressAnnouncer), not only once
	// memberlist has forgotten the dead entry (GossipToTheDeadTime).
	mlc.DeadNodeReclaimTime = time.Second
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mlc.Keyring = kr
		m.keyring.ring = kr
		mlc.GossipVerifyIncoming = true
		mlc.GossipVerifyOutgoing = true
	}
	// memberlist starts listening inside Create: a peer's push/pull can
	// arrive, and be relayed, before Create returns. The queue must exist
	// by then, and it must not touch a memberlist that is not there yet.
	m.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: mlc.RetransmitMult, NumNodes: func() int {
		if ml := m.started.Load(); ml != nil {
			return ml.NumMembers()
		}
		return 1
	}}
	ml, err := memberlist.Create(mlc)
	if err != nil {
		// memberlist formats the bind error into its message (%v), so the
		// errno is lost to errors.Is; its text is not.
		if msg := err.Error(); strings.Contains(msg, syscall.EADDRINUSE.Error()) {
			_, detail, _ := strings.Cut(msg, "failed to obtain an address: ")
			return nil, &PortInUseError{Port: cfg.Port, Detail: cmp.Or(detail, msg)}
		}
		return nil, fmt.Errorf("start gossip on port %d: %w", cfg.Port, err)
	}
	m.ml = ml
	m.started.Store(ml)
	return m, nil
}

// Join contacts the given peers ("host" or "host:port"; the default port is
// this node's gossip port) and syncs state with the first that answers.
func (m *Membership) Join(addrs []string, defaultPort int) (int, error) {
	full := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, fmt.Sprint(defaultPort))
		}
		full = append(full, a)
	}
	n, err := m.ml.Join(full)
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = errors.New("no peer answered")
	}
	return 0, fmt.Errorf("join %s: %w", strings.Join(full, ","), err)
}

// setLocalMeta replaces the record memberlist serves as this node's
// metadata; memberlist gossips it on the next UpdateNode.
func (m *Membership) setLocalMeta(r NodeRecord) error {
	meta, err := r.Encode()
	if err != nil {
		return err
	}
	m.localMu.Lock()
	m.localMeta = meta
	m.localMu.Unlock()
	return nil
}

// SetLocalRecordSync replaces the advertised record and waits (up to
// timeout) until the update has been gossiped.
func (m *Membership) SetLocalRecordSync(r NodeRecord, timeout time.Duration) error {
	if err := m.setLocalMeta(r); err != nil {
		return err
	}
	return m.ml.UpdateNode(timeout)
}

// SetLocalRecord replaces this node's advertised record and gossips it.
func (m *Membership) SetLocalRecord(r NodeRecord) error {
	if err := m.setLocalMeta(r); err != nil {
		return err
	}
	// UpdateNode blocks until the broadcast has gone round; the caller (the
	// claim path) must not wait for that, so only failures are reported.
	go func() {
		if err := m.ml.UpdateNode(10 * time.Second); err != nil {
			m.log.Warn("gossip node record", zap.Error(err))
		}
	}()
	return nil
}

// Broadcast queues a state update for gossip to all peers.
func (m *Membership) Broadcast(state []byte) { m.broadcast(msgState, state) }

// BroadcastPods queues pod directory updates for gossip to all peers,
// and sends each at once to the live nodes named in first (a datagram
// each, as memberlist's gossip sends; one lost is still carried by the
// gossip). Gossip takes a round (100 ms) to set out and more to relay;
// the nodes whose policies are waiting for a pod must not wait that long
// (see policy.Watchers). What they relay of it stays what a broadcast
// from the gossip would have made them relay.
func (m *Membership) BroadcastPods(updates [][]byte, first []string) {
	for _, update := range updates {
		m.broadcast(msgPods, update)
	}
	if len(updates) == 0 || len(first) == 0 {
		return
	}
	live := make(map[string]*memberlist.Node, m.ml.NumMembers())
	for _, n := range m.ml.Members() {
		live[n.Name] = n
	}
	msgs := make([][]byte, len(updates))
	for i, update := range updates {
		msgs[i] = append([]byte{msgPodsDirect}, update...)
	}
	for _, name := range first {
		n, ok := live[name]
		if !ok || name == m.name {
			continue
		}
		for _, msg := range msgs {
			if err := m.ml.SendBestEffort(n, msg); err != nil {
				m.log.Debug("send pod directory update", zap.String("peer", name), zap.Error(err))
				continue
			}
			m.metrics.Messages.WithLabelValues("direct", msgName(msgPods)).Inc()
		}
	}
}

func (m *Membership) broadcast(kind byte, body []byte) {
	m.metrics.Messages.WithLabelValues("sent", msgName(kind)).Inc()
	msg := make([]byte, 0, len(body)+1)
	msg = append(msg, kind)
	msg = append(msg, body...)
	m.queue.QueueBroadcast(broadcast(msg))
}

// WaitBroadcasts waits until queued state updates have been sent to peers
// as often as memberlist retransmits them, or timeout passes.
func (m *Membership) WaitBroadcasts(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for m.queue.NumQueued() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// Changes signals (coalesced) whenever peers or the lease table changed.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

// PodChanges signals (coalesced) whenever the pod directory changed. It is
// apart from Changes because only network policy reads other nodes' pods:
// their churn, in a large fabric several changes a second, must not make
// every node reconcile its whole data plane.
func (m *Membership) PodChanges() <-chan struct{} { return m.podChanges }

// PodNews signals (coalesced) whenever pod directory updates sent straight
// to this node (see BroadcastPods) changed the directory: its policies
// wait for those pods, whose first packets are on their way. PodChanges
// does not signal them.
func (m *Membership) PodNews() <-chan struct{} { return m.podNews }

func (m *Membership) notify() { signal(m.changes) }

// signal sends on a channel of one slot unless a signal waits there.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Peers returns every known remote node, sorted by name. Alive peers that
// memberlist currently suspects are reported as suspect.
func (m *Membership) Peers() []Peer {
	suspect := map[string]bool{}
	for _, n := range m.ml.Members() {
		if n.State == memberlist.StateSuspect {
			suspect[n.Name] = true
		}
	}
	m.peersMu.Lock()
	out := make([]Peer, 0, len(m.peers))
	for _, p := range m.peers {
		if p.State == PeerAlive && suspect[p.Record.Name] {
			p.State = PeerSuspect
		}
		p.ClockOffset = m.clockOffsets[p.Record.Name]
		out = append(out, p)
	}
	m.peersMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Record.Name < out[j].Record.Name })
	return out
}

// NumMembers is the number of live members including this node.
func (m *Membership) NumMembers() int { return m.ml.NumMembers() }

// Leave announces a clean departure; peers drop this node at once.
func (m *Membership) Leave(timeout time.Duration) error {
	m.announcer.stop()
	return m.ml.Leave(timeout)
}

// Shutdown stops gossip without announcing a departure: peers detect the
// silence as a failure, which is what a restart should look like.
func (m *Membership) Shutdown() error {
	m.announcer.stop()
	return m.ml.Shutdown()
}

// logWriter forwards memberlist's "[LEVEL] memberlist: ..." lines to zap,
// and counts the ones that mean a packet failed decryption or
// verification: memberlist reports key failures only in its log.
type logWriter struct {
	log         *zap.Logger
	keyFailures interface{ Inc() }
}

// conflictMarker starts memberlist's line for a node name heard at a
// second address.
const conflictMarker = "Conflicting address for"

var keyFailureMarkers = []string{"decrypt", "No installed keys", "Encryption is configured but remote state is not encrypted", "not encrypted", "verify"}

var _ io.Writer = (*logWriter)(nil)

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	msg := line
	for _, marker := range keyFailureMarkers {
		if strings.Contains(line, marker) {
			w.keyFailures.Inc()
			break
		}
	}
	for _, lvl := range []string{"[DEBUG]", "[INFO]", "[WARN]", "[ERR]", "[ERROR]"} {
		if strings.HasPrefix(line, lvl) {
			msg = strings.TrimSpace(strings.TrimPrefix(line, lvl))
			if strings.Contains(msg, conflictMarker) {
				// Logged on every message from a node at a new address;
				// conflictDelegate says it once, and what it means.
				lvl = "[DEBUG]"
			}
			switch lvl {
			case "[DEBUG]":
				w.log.Debug(msg, zap.String("component", "memberlist"))
			case "[INFO]":
				w.log.Debug(msg, zap.String("component", "memberlist"))
			case "[WARN]":
				w.log.Warn(msg, zap.String("component", "memberlist"))
			default:
				w.log.Error(msg, zap.String("component", "memberlist"))
			}
			return len(p), nil
		}
	}
	w.log.Info(msg, zap.String("component", "memberlist"))
	return len(p), nil
}
