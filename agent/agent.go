package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
)

// Agent is one running loomd.
type Agent struct {
	cfg     *resolved
	log     *zap.Logger
	kernel  *overlay.WriteCounter
	dp      *overlay.Dataplane
	backend overlay.Backend
	fw      *overlay.NFTables
	store   *ipam.Store
	leases  *ipam.LeaseTable
	members *gossip.Membership
	mac     net.HardwareAddr
	metrics *metrics
	policy  *policyState
	// wg is the WireGuard backend (nil with VXLAN); wgPublic its key.
	wg       *overlay.WireGuard
	wgPublic []byte

	// stateMu guards the fields below it.
	stateMu     sync.Mutex
	subnet      netip.Prefix
	epoch       uint64
	programmed  map[string]bool
	refused     map[string]string // peers whose record lost its subnet, and why
	excluded    map[string]string // peers not programmed at the last reconcile, and why
	applied     bool
	lastErr     error
	serving     bool
	conflicts   int
	confWritten bool
	// confErr is why the conflist could not be written; nil once it is.
	confErr error
	// underlayProblem says why peers cannot reach this node through
	// --iface (it is gone, or the advertised address left it); "" if none.
	underlayProblem string
	// claimErr is why this node has no subnet, while it waits for one.
	claimErr error
	// sweepErr is the last connection tracking sweep's failure.
	sweepErr error

	// kubeNodes are the Kubernetes Node objects the policy source saw.
	kubeNodes kubeNodes

	// underlayMoved is set when Run ends for ErrUnderlayChanged because
	// the address moved: gossip then leaves rather than stopping silently,
	// so peers take the node at its new address as soon as it is back,
	// without first declaring the old one dead.
	underlayMoved atomic.Bool

	// dpMu serialises computing desired state and applying it with pod
	// attach and detach, so a reconcile never works from a snapshot of the
	// pods that an attach has since changed. It guards holders.
	dpMu sync.Mutex
	// holders is who held each subnet at the last reconcile.
	holders map[netip.Prefix]string
	// conntrack deletes the flows of addresses given up.
	conntrack *overlay.ConntrackSweeper

	kick chan struct{}
	// leaveReq carries a leave request from the API to the main loop.
	leaveReq chan chan error
	// leaving is set while the node leaves the fabric: rejoin then
	// contacts nobody.
	leaving atomic.Bool

	// startedAt and joined decide when membership has settled after start:
	// until then the data plane is adopted, never pruned.
	startedAt time.Time
	joined    atomic.Bool
	// podDirSaveErr is the last failure to save the pod directory (only
	// the loop saves it).
	podDirSaveErr error
	// restoredOwners are the nodes whose active claims were restored at
	// start, until membership settles (see reserveUnheard). The lease
	// table was last saved at claimsSavedAt (zero: never), after
	// claimsSavedChanges of its changes; claimsSaveErr is the last
	// failure to save it. Only the loop uses them after start.
	restoredOwners     map[string]bool
	claimsSavedChanges uint64
	claimsSavedAt      time.Time
	claimsSaveErr      error
	// freshBootstrap: no --join, no persisted lease: a brand-new fabric,
	// with nothing in the kernel worth adopting.
	freshBootstrap bool
	// joinTargets are --join plus the peers persisted at the last run.
	joinTargets []string
	// remembered are the underlay addresses of the peers programmed at the
	// last run.
	remembered []string
	// savedPeers is the peer list last persisted (guarded by dpMu).
	savedPeers string
	// lastPodSubnets are the pod subnets of the last reconcile, by node
	// (see podSubnets; written under dpMu, read by a pod's publish too).
	lastPodSubnets atomic.Pointer[map[string][]netip.Prefix]
	// conflictSince is when the loop first found an older lease holding
	// this node's subnet; zero while none does. Only the loop uses it.
	conflictSince time.Time
}

// settleTimeout bounds how long a restarted agent that cannot reach any
// peer keeps the entries it found in the kernel.
func (a *Agent) settleTimeout() time.Duration { return max(a.cfg.DeadNodeGrace, 10*time.Second) }

// settled reports whether membership, as peers shows it, is trustworthy
// enough to remove entries: the node joined a peer, has nobody to join, or
// waited long enough.
//
// A restarted node knows which peers it had (remembered in the store); it
// settles once membership has a verdict on every one of them. memberlist
// can report a successful join before it has merged the peer it joined,
// so "joined" alone is not enough. peers must be the snapshot the desired
// state was computed from: a peer merged between two reads would count as
// known here while missing from the desired state, and its entries would
// be removed until the next reconcile put them back.
func (a *Agent) settled(peers []gossip.Peer) bool {
	if a.freshBootstrap || time.Since(a.startedAt) > a.settleTimeout() {
		return true
	}
	known := map[string]bool{}
	for _, p := range peers {
		known[p.Record.Underlay.String()] = true
	}
	for _, addr := range a.remembered {
		if !known[addr] {
			return false
		}
	}
	return len(a.remembered) > 0 || a.joined.Load() || a.members.NumMembers() > 1
}

// Run starts loomd and blocks until ctx is cancelled. Cancelling stops the
// agent but leaves the data plane in place: pods keep talking while the
// agent restarts.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	r, k, err := resolveHere(cfg)
	if err != nil {
		return err
	}
	defer k.Close()
	a := &Agent{
		cfg:        r,
		log:        log,
		kernel:     &overlay.WriteCounter{Kernel: k},
		mac:        overlay.VTEPMAC(r.NodeName),
		programmed: map[string]bool{},
		holders:    map[netip.Prefix]string{},
		kick:       make(chan struct{}, 1),
		leaveReq:   make(chan chan error, 1),
		startedAt:  time.Now(),
	}
	a.metrics = newMetrics(a)
	vxlanPort := r.VXLANPort
	switch r.Backend {
	case BackendWireGuard:
		key, err := loadWireGuardKey(r.StateDir)
		if err != nil {
			return err
		}
		pub := key.PublicKey()
		a.wgPublic = pub[:]
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find loomd's own binary for the WireGuard helper: %w", err)
		}
		wg := overlay.NewWireGuard(a.kernel, overlay.WireGuardConfig{
			Name: overlay.WireGuardDevice, Port: r.WireGuardPort, MTU: r.mtu, PrivateKey: key,
			Keepalive: r.WireGuardKeepalive,
			Helper:    []string{self, "wireguard-device"},
			Socket:    filepath.Join(r.StateDir, "wireguard.sock"),
			HelperLog: filepath.Join(r.StateDir, "wireguard-device.log"),
		})
		a.wg, a.backend = wg, wg
		vxlanPort = 0 // no VXLAN socket to guard
	default:
		a.backend = overlay.NewVXLAN(a.kernel, overlay.VXLANConfig{
			Name: overlay.DeviceName(r.VNI), VNI: r.VNI, Port: r.VXLANPort, MTU: r.mtu,
			MAC: a.mac, UnderlayIndex: r.underlay.Attrs().Index, Local: r.source,
		})
		if r.DirectRouting {
			a.backend = overlay.NewDirect(a.kernel, a.backend, r.Iface)
		}
	}
	a.fw = overlay.NewNFTables()
	if err := a.fw.FindLastRun(); err != nil {
		log.Warn("cannot tell whether a firewall of the last run is in force; the first reconcile looks again", zap.Error(err))
	}
	a.dp = overlay.NewDataplane(overlay.DataplaneConfig{
		Kernel: a.kernel, Backend: a.backend, Firewall: a.fw, Cluster: r.cluster,
		VXLANPort: vxlanPort, TunnelIPv6: r.source.Is6(), NoMasquerade: !r.Masquerade, PodToHost: r.podToHost,
		AntiSpoof: r.PodAntiSpoof, Sysctl: overlay.SetSysctl,
		OnDetachError: func(hostIf string, err error) {
			a.log.Warn("pod veth not deleted; it stays down until its netns goes or CNI GC runs", zap.String("host_if", hostIf), zap.Error(err))
		},
	})
	a.conntrack = overlay.NewConntrackSweeper(a.kernel, a.conntrackSwept)
	// Runs after the API stopped (deferred before it): a DEL answered
	// just before shutdown still has its flows deleted.
	defer a.conntrack.Sweep()
	a.leases = ipam.NewLeaseTable(r.space)
	a.policy = &policyState{source: r.policySource, dir: policy.NewDirectory(r.NodeName, func(rec policy.PodRecord) error {
		if !r.cluster.Contains(rec.IP) {
			return fmt.Errorf("pod record of %s: %s is outside the cluster CIDR %s", rec.Node, rec.IP, r.cluster)
		}
		return nil
	})}

	a.policy.dir.OnPodGone(a.forgetFlows)

	if a.store, err = ipam.OpenStore(r.StateDir); err != nil {
		return err
	}
	defer a.store.Close()
	a.releasePreviousBoot()
	// The pod directory starts with this node's own pods. At the first
	// exchange peers send what they hold of them, and a directory that did
	// not know them would answer that they are gone: every peer would drop
	// them from its policies, and delete their flows, until the first
	// reconcile published them again.
	if allocs, err := a.store.Allocations(); err == nil {
		a.policy.dir.Publish(podRecords(allocs))
	}
	a.restorePodDirectory()
	a.restoreClaims()
	// Deferred after the store's Close, so they run before: what the
	// agent learned last is on disk when loomd stops.
	defer a.savePodDirectory()
	defer a.saveClaims(true)
	var policyLoadedFrom [sha256.Size]byte
	if r.policySource == PolicySourceFiles {
		// Load before the first reconcile rewrites the firewall: starting
		// with no policy would open every pod until the first reload. A bad
		// set does not keep the node off the fabric: its policies stay
		// pending (see policyState.pending) until the directory is mended.
		policyLoadedFrom, _ = policy.DirFingerprint(r.PolicyDir)
		if objs, err := policy.LoadDir(r.PolicyDir); err != nil {
			a.policyLoaded(err)
		} else {
			a.policy.setObjects(objs, nil)
		}
	}
	if r.policySource == PolicySourceKubernetes {
		kube, err := a.startKubernetesPolicies(ctx)
		if err != nil {
			return err
		}
		defer kube.stop()
	}
	if err := overlay.EnableForwarding(); err != nil {
		return err
	}
	if r.PodAntiSpoof == overlay.AntiSpoofRPFilter {
		// The kernel applies the larger of "all" and the interface's value:
		// with all=2 (loose) a per-veth strict setting would do nothing.
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter"); err == nil && strings.TrimSpace(string(b)) == "2" {
			return flagErr("pod-antispoof", "rp_filter needs net.ipv4.conf.all.rp_filter 0 or 1, this node has 2 (loose); use nftables or lower it")
		}
	}
	if err := a.loadPersistedKeyring(); err != nil {
		return err
	}
	if len(r.keys) == 0 {
		log.Warn("gossip is NOT encrypted or authenticated (--insecure-gossip): anyone who can reach the gossip port can join this fabric")
	}

	persisted, havePersisted, err := a.store.LoadLease()
	if err != nil {
		return err
	}
	if havePersisted && !persisted.HeldBy(r.NodeName) {
		log.Warn("the state directory holds another node's lease (a copied disk image, or a renamed node); claiming a subnet anew",
			zap.String("node", r.NodeName), zap.String("lease_owner", persisted.Owner), zap.Stringer("subnet", persisted.Subnet))
		havePersisted = false
	}
	known, err := a.store.LoadPeers()
	if err != nil {
		log.Warn("read remembered peers", zap.Error(err))
	}
	a.joinTargets = mergeTargets(r.Join, known)
	a.remembered = known
	if holders, err := a.store.LoadHolders(); err != nil {
		log.Warn("read the subnets' holders remembered from the last run; flows of subnets that changed hands meanwhile are not deleted", zap.Error(err))
	} else if holders != nil {
		a.holders = holders
	}
	if havePersisted && r.space.Check(persisted.Subnet) == nil {
		// Advertise the subnet this node is about to reuse from the first
		// gossip on, so peers never see it without one and drop its route
		// while it restarts. claim() still checks for a conflict.
		a.stateMu.Lock()
		a.subnet, a.epoch = persisted.Subnet, persisted.Epoch
		a.stateMu.Unlock()
	}
	a.freshBootstrap = len(r.Join) == 0 && !havePersisted
	// endRun ends Run with a cause: ErrUnderlayChanged, or an error that
	// says why this node must not run.
	ctx, endRun := context.WithCancelCause(ctx)
	defer endRun(nil)
	a.members, err = gossip.Start(gossip.Config{
		NodeName: r.NodeName, AdvertiseAddr: r.advertise, Port: r.GossipPort, Keys: r.keys,
		Profile: r.GossipProfile, State: a.leases, Pods: a.policy.dir, Logger: log, Metrics: a.metrics.gossip,
		ValidateRecord: r.validateRecord, OnKeyringChange: a.persistKeyring,
		OnNameInUse: func(other netip.Addr) {
			err := errNameInUse(r.NodeName, other)
			log.Error("stopping: another live node runs under this node's name", zap.String("node", r.NodeName), zap.Stringer("other", other), zap.Error(err))
			endRun(err)
		},
	}, a.record())
	if err == nil {
		// From here on the table knows who is alive, and forgets.
		members := a.members
		a.leases.SetLiveness(func(owner string) bool { return owner == r.NodeName || members.Live(owner) })
		a.leases.ForgetAfter(claimMemory(r.LeaseTTL))
		a.policy.dir.ForgetAfter(members.Known, claimMemory(r.LeaseTTL))
	}
	if inUse := (*gossip.PortInUseError)(nil); errors.As(err, &inUse) {
		return flagErr("gossip-port", "%d is in use on this node (Docker Swarm gossips on 7946 too; every node of a fabric needs the same port): %s", inUse.Port, inUse.Detail)
	}
	if err != nil {
		return err
	}
	defer func() {
		// No Leave: peers must see a restart as a failure and keep routes
		// for the grace period, not withdraw them at once. A node leaving
		// for a new address is the exception: its routes are useless
		// already, and peers record it as failed anyway (its record does
		// not say it is leaving the fabric).
		if a.underlayMoved.Load() {
			if err := a.members.Leave(2 * time.Second); err != nil {
				log.Warn("leave gossip before starting again at the new underlay address", zap.Error(err))
			}
		}
		if err := a.members.Shutdown(); err != nil {
			log.Warn("stop gossip", zap.Error(err))
		}
	}()
	// Deferred before the API stops, so it runs after: veths of pods
	// deleted just before shutdown are deleted now, while the kernel
	// handle is still open, rather than left behind (or deleted through a
	// closed handle by their background deletion).
	defer a.dp.WaitDetached("", "")
	stopAPI, err := a.serveAPI()
	if err != nil {
		return err
	}
	defer stopAPI()
	if r.MetricsAddr != "" {
		stopMetrics, err := a.serveMetrics()
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	log.Info("loomd starting", zap.String("node", r.NodeName), zap.String("version", Version),
		zap.Stringer("underlay", r.advertise), zap.String("iface", r.Iface), zap.Stringer("vtep", a.mac),
		zap.Int("mtu", r.mtu), zap.Stringer("cluster", r.cluster))

	if err := a.joinForClaim(ctx, havePersisted); err != nil {
		return err
	}
	// Before claiming: under a name another live node runs as, the lease
	// table would hand this node that node's subnet.
	if other, inUse := a.members.NameInUse(2); inUse {
		return errNameInUse(r.NodeName, other)
	}
	// Nor at an address another live node advertises: peers would send
	// this node's tunnel packets to that node, and find this one dead and
	// alive by turns. Only an address that is not on this machine can be
	// another's: one that is, held under another name, is this machine's
	// own last run (renamed, not yet declared dead).
	if r.advertise != r.source {
		if owner, inUse := a.members.LivePeerAt(r.advertise); inUse {
			return flagErr("advertise-addr", "this node's underlay address %s is that of the live node %q; every node needs an address of its own (a configuration copied with its --advertise-addr?)", r.advertise, owner)
		}
	}
	if err := a.claim(persisted, havePersisted); err != nil {
		if !errors.Is(err, ipam.ErrNoFreeSubnet) {
			return err
		}
		// Reservations of dead nodes end on their own: wait, not ready,
		// rather than exit and rejoin over and over under a supervisor.
		// A persisted subnet another node holds now was advertised from
		// the first gossip on; waitForSubnet withdraws it.
		a.waitForSubnet(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	a.watchUnderlay(watchCtx, func(c underlayChange) {
		switch {
		case c.movedTo.IsValid() && r.AdvertiseAddr != "":
			// Behind a NAT: peers reach the same public address, so this
			// is a restart to them, not a move.
			a.log.Warn("underlay address changed; loomd starts again to send tunnel packets from the new one (data plane and pods stay)",
				zap.Stringer("from", r.source), zap.Stringer("to", c.movedTo), zap.String("iface", r.Iface))
		case c.movedTo.IsValid():
			a.log.Warn("underlay address changed; loomd starts again to advertise the new one (data plane and pods stay)",
				zap.Stringer("from", r.advertise), zap.Stringer("to", c.movedTo), zap.String("iface", r.Iface))
			a.underlayMoved.Store(true)
		case c.recreated:
			a.log.Warn("underlay interface was created anew; loomd starts again to bind the tunnel to it (data plane and pods stay)",
				zap.String("iface", r.Iface))
		default:
			a.log.Warn("underlay MTU changed; loomd starts again to size the overlay to it (pods made before keep their MTU until recreated)",
				zap.String("iface", r.Iface), zap.Int("underlay_mtu", c.mtu), zap.Int("overlay_mtu_was", r.mtu))
		}
		endRun(ErrUnderlayChanged)
	})
	if r.policySource == PolicySourceFiles {
		go a.watchPolicyDir(watchCtx, policyLoadedFrom)
	}
	go a.conntrack.Run(watchCtx)
	if err := overlay.Watch(watchCtx, a.backend.DeviceIndex, a.dp.Detaching, a.trigger, a.notificationsLost("links, routes, neighbours, forwarding")); err != nil {
		a.log.Warn("cannot watch kernel changes; drift is repaired on the periodic resync only", zap.Error(err))
	}
	rewriteFirewall := func() {
		a.fw.Invalidate()
		a.trigger()
	}
	if err := overlay.WatchFirewall(watchCtx, func() {
		a.log.Warn("another process changed Loom's nftables table; writing it again", zap.String("table", overlay.FirewallTable))
		rewriteFirewall()
	}, rewriteFirewall, a.notificationsLost("nftables")); err != nil {
		a.log.Warn("cannot watch nftables; a removed firewall table is restored on the periodic resync only", zap.Error(err))
	}
	if err := a.loop(ctx); err != nil {
		return err
	}
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// notificationsLost returns the onError of a kernel watcher: the kernel
// ended one of its subscriptions, which the watcher opens again before it
// asks for a reconcile of everything the subscription covers.
func (a *Agent) notificationsLost(what string) func(error) {
	return func(err error) {
		a.log.Warn("kernel change notifications lost; subscribing again and checking everything they cover",
			zap.String("notifications", what), zap.Error(err))
	}
}

// Check resolves cfg as Run does at start, changing nothing: the flags'
// values, the files they name (keys, kubeconfig, policies) and the
// interface and addresses they refer to. A bad policy directory fails the
// check (and so a reload), where a start runs on with its pods waiting
// (see policyState.pending).
func Check(cfg Config) error {
	r, k, err := resolveHere(cfg)
	if err != nil {
		return err
	}
	k.Close()
	if r.policySource == PolicySourceFiles {
		if _, err := policy.LoadDir(r.PolicyDir); err != nil {
			return flagErr("policy-dir", "%v", err)
		}
	}
	return nil
}

// resolveHere resolves cfg against this network namespace's kernel, which
// it returns open (the caller closes it) when cfg resolves.
func resolveHere(cfg Config) (*resolved, *overlay.NetlinkKernel, error) {
	k, err := overlay.NewNetlinkKernel()
	if err != nil {
		return nil, nil, err
	}
	r, err := Resolve(cfg, k)
	if err != nil {
		k.Close()
		return nil, nil, err
	}
	return r, k, nil
}

// errNameInUse is the configuration error of a node started under the
// name of another live node.
func errNameInUse(name string, other netip.Addr) error {
	return flagErr("node-name", "%q is in use by a live node at %s; give this node another name (cloned machines keep their hostname, which is the default)", name, other)
}

// joinForClaim joins the fabric before a subnet is claimed. A node with a
// persisted lease tries once and goes on (it can serve its pods even if
// every peer is down); a new node waits until it has synced the lease
// table, because claiming blind is how two nodes end up on one subnet.
func (a *Agent) joinForClaim(ctx context.Context, havePersisted bool) error {
	if len(a.joinTargets) == 0 {
		a.log.Info("no --join given: bootstrapping a new fabric")
		return nil
	}
	backoff := 500 * time.Millisecond
	for {
		n, err := a.members.Join(a.joinTargets, a.cfg.GossipPort)
		if err == nil {
			a.joined.Store(true)
			a.log.Info("joined fabric", zap.Int("contacted", n), zap.Int("members", a.members.NumMembers()))
			return nil
		}
		if havePersisted || len(a.cfg.Join) == 0 {
			a.log.Warn("could not reach any known peer; reusing persisted lease and retrying in the background", zap.Error(err))
			return nil
		}
		a.log.Warn("could not join fabric; retrying before claiming a subnet", zap.Error(err), zap.Duration("retry", backoff))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// mergeTargets is join followed by the remembered peers not already in it.
func mergeTargets(join, known []string) []string {
	out := append([]string(nil), join...)
	seen := map[string]bool{}
	for _, j := range join {
		seen[j] = true
	}
	for _, k := range known {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// record is this node's gossiped node record.
func (a *Agent) record() gossip.NodeRecord {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	rec := gossip.NodeRecord{
		Name: a.cfg.NodeName, Underlay: a.cfg.advertise, VTEPMAC: a.mac,
		Subnet: a.subnet, LeaseEpoch: a.epoch, AgentVersion: Version, Backend: a.backend.Name(),
		WGPublicKey: a.wgPublic, TunnelPort: uint16(a.cfg.VXLANPort), VNI: uint32(a.cfg.VNI),
		Cluster: a.cfg.cluster, SubnetBits: a.cfg.space.Bits, MTU: a.cfg.mtu,
	}
	if a.wg != nil {
		rec.TunnelPort, rec.VNI = uint16(a.cfg.WireGuardPort), 0
	}
	return rec
}

func (a *Agent) currentSubnet() netip.Prefix {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.subnet
}

// trigger asks the loop to reconcile soon; it never blocks.
func (a *Agent) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// maxRetryInterval bounds how long a persistent data plane failure waits
// for its next retry, and so how soon the node recovers once it is fixed.
const maxRetryInterval = 8 * time.Second

// rejoinInterval is how often dead peers (and, when alone, the --join
// list) are contacted again, and how often lease states are looked at.
const rejoinInterval = 5 * time.Second

// loop reconciles on every change, on a timer for dead-peer grace, and on
// the periodic resync; beside it, rejoinEvery retries joins to reach
// missing peers.
func (a *Agent) loop(ctx context.Context) error {
	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	housekeeping := time.NewTicker(rejoinInterval)
	defer housekeeping.Stop()
	rejoinCtx, stopRejoin := context.WithCancel(ctx)
	defer stopRejoin()
	go a.rejoinEvery(rejoinCtx)
	grace := time.NewTimer(time.Hour)
	defer grace.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	// A failed reconcile is retried after a second (most failures are
	// races with the kernel or a runtime), then less often while the same
	// failure persists.
	retryAfter := time.Duration(0)
	// due fires when pace says a paced reconcile is due.
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	var pace pacer
	paced := func(why string, wait waitFunc) {
		if d, moved := pace.add(why, wait, time.Now()); moved {
			due.Reset(d)
		}
	}

	reason := "startup"
	for {
		if a.checkLeases() && reason == "" {
			reason = "leases"
		}
		if reason != "" {
			// Any reconcile reads the kernel, the allocations and the pod
			// directory as they are.
			due.Stop()
			start := time.Now()
			next, err := a.reconcile(reason)
			pace.ran(start, time.Now())
			if err != nil {
				retryAfter = min(max(2*retryAfter, time.Second), maxRetryInterval)
				retry.Reset(retryAfter)
			} else {
				retryAfter = 0
			}
			if !next.IsZero() {
				grace.Reset(time.Until(next))
			}
		}
		reason = ""
		a.savePodDirectory()
		a.saveClaims(false)
		select {
		case <-ctx.Done():
			a.log.Info("loomd stopping; data plane left in place")
			return nil
		case <-a.members.Changes():
			reason = "membership"
		case <-a.members.PodChanges():
			// Only policies read other nodes' pods: without them the
			// kernel has nothing to change (the loop saves the directory
			// all the same).
			if a.policy.readsPodDirectory() {
				paced("pods", policy.CompileWait)
			}
		case <-a.members.PodNews():
			if a.policy.readsPodDirectory() {
				paced("pods", policy.NewsWait)
			}
		case <-a.kick:
			paced("change", policy.CompileWait)
		case <-due.C:
			reason = pace.reason
			if pace.policyOnly {
				// A failure, or no firewall to build on yet: the whole
				// reconcile, at once.
				start := time.Now()
				if applied, err := a.reconcilePolicy(reason); applied && err == nil {
					pace.ran(start, time.Now())
					reason = ""
				}
			}
		case <-grace.C:
			reason = "dead-node-grace"
		case <-retry.C:
			reason = "retry"
		case <-resync.C:
			reason = "resync"
		case <-housekeeping.C:
			// Lease states are looked at again above (a reservation may
			// have ended); the kernel is read again only for a reason.
			a.forgetLongGone()
		case done := <-a.leaveReq:
			// No new join starts while the node says goodbye.
			a.leaving.Store(true)
			err := a.leave()
			done <- err
			if err == nil {
				return nil
			}
			a.leaving.Store(false)
			reason = "leave-failed"
		}
	}
}

// claimMemory is how long the lease table keeps a claim after it stopped
// blocking its subnet. Twice the lease TTL outlasts any reservation a
// node cut off from a release makes meanwhile (see ipam.ForgetAfter),
// with room for nodes whose --lease-ttl or clock differ somewhat.
func claimMemory(leaseTTL time.Duration) time.Duration { return 2 * leaseTTL }

// forgetLongGone drops claims that ended long ago (see claimMemory), then
// peers dead that long with no claim left, then the pod records of nodes
// no longer known: a fabric that replaces its nodes would otherwise carry
// one claim per node it ever had, and every pod such a node ever ran, in
// every push/pull, and list every such node, for good.
func (a *Agent) forgetLongGone() {
	if gone := a.leases.Forget(); len(gone) > 0 {
		claims := make([]string, 0, len(gone))
		for _, c := range gone {
			claims = append(claims, c.Owner+"@"+c.Subnet.String())
		}
		a.log.Info("forgot subnet claims that ended long ago", zap.Int("claims", len(gone)), zap.Strings("first", claims[:min(len(claims), 10)]))
	}
	memory := claimMemory(a.cfg.LeaseTTL)
	if memory == 0 {
		return
	}
	now := time.Now()
	for _, p := range a.members.Peers() {
		name := p.Record.Name
		if !p.Live() && now.Sub(p.Since) > memory && len(a.leases.ClaimsBy(name)) == 0 && a.members.Forget(name) {
			a.log.Info("forgot peer gone long ago", zap.String("node", name), zap.String("state", p.State.String()), zap.Time("since", p.Since))
		}
	}
	// Until membership settles, a peer whose agent is down too is not
	// known, and the records saved of its pods may be all there is of them.
	if a.settled(a.members.Peers()) {
		if nodes := a.policy.dir.Forget(); len(nodes) > 0 {
			a.log.Info("forgot pod records of nodes gone long ago", zap.Strings("nodes", nodes))
		}
	}
	a.kubeNodes.forget(a.members.Known)
}

// rejoinEvery runs rejoin every rejoinInterval until ctx ends. It has a
// goroutine of its own because a join can take long: memberlist contacts
// the targets one by one, and a dial to a peer cut off by a partition or
// gone from the network lasts until the kernel gives up on its address
// (about 3 s) or memberlist's TCP timeout ends it (10 s on lan). Run from
// the reconcile loop, it held back every change meanwhile, a node joining
// included.
func (a *Agent) rejoinEvery(ctx context.Context) {
	t := time.NewTicker(rejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !a.leaving.Load() {
				a.rejoin()
			}
		}
	}
}

// rejoin contacts dead peers and, when alone, the --join list, so a healed
// partition or a restarted fabric merges again without an operator.
func (a *Agent) rejoin() {
	var targets []string
	for _, p := range a.members.Peers() {
		if p.State == gossip.PeerDead {
			targets = append(targets, p.Record.Underlay.String())
		}
	}
	if a.members.NumMembers() <= 1 {
		targets = append(targets, a.joinTargets...)
	}
	if len(targets) == 0 {
		return
	}
	if n, err := a.members.Join(targets, a.cfg.GossipPort); err == nil {
		if !a.joined.Swap(true) {
			a.log.Info("joined fabric", zap.Int("contacted", n), zap.Int("members", a.members.NumMembers()))
			a.trigger()
		}
	}
}

// reconcile computes the desired data plane and applies it. It returns when
// the next dead peer's grace period ends (zero if none).
func (a *Agent) reconcile(reason string) (time.Time, error) {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	subnet := a.currentSubnet()
	if !subnet.IsValid() {
		return time.Time{}, nil
	}
	listed := a.policy.dir.Mark()
	allocs, err := a.store.Allocations()
	if err != nil {
		// Without its pods the desired state would cut every one of them
		// off (their routes pruned, their addresses out of the firewall):
		// leave the kernel as it is, and retry.
		return time.Time{}, a.reconcileFailed(reason, fmt.Errorf("read pod allocations; data plane left as it is: %w", err))
	}
	now := time.Now()
	peers := a.members.Peers()
	d, next, excluded := desiredState(a.record(), subnet, peers, a.leases, allocs, now, a.cfg.DeadNodeGrace)
	adopt := !a.settled(peers)
	subnets := a.podSubnets(d.Peers, adopt)
	a.lastPodSubnets.Store(&subnets)
	d.Policy = a.compilePolicy(allocs, listed, subnets)
	pending := a.policy.pending()
	if pending {
		pendingFirewall(&d)
	}
	a.sweepHandedOver(subnet, d.Peers)
	a.stateMu.Lock()
	for name, why := range excluded {
		switch {
		case strings.HasPrefix(why, "lost "):
			// A record claiming a subnet an older live lease holds is refused:
			// warn and count once per claim, not on every reconcile.
			if a.refused[name] != why {
				a.log.Warn("refusing peer record: its subnet belongs to an older lease", zap.String("node", name), zap.String("reason", why))
				a.metrics.gossip.Rejected.Inc()
			}
		case strings.HasPrefix(why, "refused: "):
			if a.refused[name] != why {
				a.log.Error("refusing peer: it cannot be connected to this node", zap.String("node", name), zap.String("reason", why))
				a.metrics.gossip.Rejected.Inc()
			}
		case a.programmed[name]:
			a.log.Info("withdrawing peer", zap.String("node", name), zap.String("reason", why))
		default:
			a.log.Debug("peer not programmed", zap.String("node", name), zap.String("reason", why))
		}
	}
	refused := map[string]string{}
	for name, why := range excluded {
		if strings.HasPrefix(why, "lost ") || strings.HasPrefix(why, "refused: ") {
			refused[name] = why
		}
	}
	a.refused = refused
	a.excluded = excluded
	a.stateMu.Unlock()
	if adopt {
		d.Adopt = true
		// Adopting must not narrow the firewall either: until membership has
		// spoken, the peers of the last run may still send VXLAN traffic.
		for _, addr := range a.remembered {
			if ip, err := netip.ParseAddr(addr); err == nil {
				d.NodeAddrs = append(d.NodeAddrs, ip)
			}
		}
		// Nor the peers' overlay addresses, or their traffic to this node
		// counts as a pod's. A subnet's first address is only ever its
		// holder's, so every subnet held at the last run gives one.
		for subnet := range a.holders {
			d.NodeOverlays = append(d.NodeOverlays, subnet.Addr())
		}
		if settle := a.startedAt.Add(a.settleTimeout()); next.IsZero() || settle.Before(next) {
			next = settle
		}
	}
	start := time.Now()
	res, err := a.dp.Apply(d)
	a.metrics.observeReconcile(reason, time.Since(start), res, d, err)
	if res.ForwardingRestored {
		a.log.Warn("IPv4 forwarding was off (a sysctl reload, a hardening script?); turned it on again", zap.String("sysctl", "net.ipv4.ip_forward"))
	}
	programmed := map[string]bool{}
	var addrs []string
	for _, p := range d.Peers {
		programmed[p.Name] = true
		addrs = append(addrs, p.Underlay.String())
	}
	if key := strings.Join(addrs, ","); len(addrs) > 0 && key != a.savedPeers {
		if err := a.store.SavePeers(addrs); err != nil {
			a.log.Warn("remember peers", zap.Error(err))
		} else {
			a.savedPeers = key
		}
	}
	a.stateMu.Lock()
	a.programmed = programmed
	first := err == nil && !a.applied
	if err == nil {
		a.applied = true
	}
	a.stateMu.Unlock()
	a.noteReconcileResult(reason, err)
	if res.Writes > 0 {
		a.log.Info("data plane updated", zap.String("reason", reason), zap.Int("writes", res.Writes),
			zap.Bool("device_changed", res.DeviceChanged), zap.Any("added", res.Added), zap.Any("removed", res.Removed),
			zap.Int("peers", len(d.Peers)), zap.Int("pods", len(d.Pods)))
	}
	if first {
		a.log.Info("data plane programmed", zap.Stringer("subnet", subnet))
		a.detachOrphanVeths()
	}
	if err == nil && !pending {
		// Retried as a failed reconcile is; writeConflist logs it. Not
		// while the policies are pending: a runtime that sees the file
		// sends pods, which cannot be served yet (one written by the last
		// run stays).
		err = a.writeConflist()
	}
	return next, err
}

// reconcileFailed records a reconcile that stopped before applying
// anything, and returns err.
func (a *Agent) reconcileFailed(reason string, err error) error {
	a.metrics.reconciles.WithLabelValues(reason, "error").Inc()
	a.noteReconcileResult(reason, err)
	return err
}

// noteReconcileResult keeps a reconcile's failure for readiness and logs
// it when it first appears or changes, and when it clears.
func (a *Agent) noteReconcileResult(reason string, err error) {
	a.stateMu.Lock()
	prevErr := a.lastErr
	a.lastErr = err
	a.stateMu.Unlock()
	switch {
	case newFailure(prevErr, err):
		a.log.Warn("reconcile incomplete; retrying", zap.String("reason", reason), zap.Error(err))
	case err != nil:
		// The same failure again (a device in the way, a missing module):
		// said once; readiness and the metrics keep saying it.
		a.log.Debug("reconcile incomplete; retrying", zap.String("reason", reason), zap.Error(err))
	case prevErr != nil:
		a.log.Info("reconcile complete again", zap.String("reason", reason))
	}
}

// desiredState is the data plane implied by membership, the lease table and
// local allocations. A dead peer stays for grace after its death so a quick
// restart does not interrupt traffic; next says when the earliest grace
// period ends.
func desiredState(local gossip.NodeRecord, subnet netip.Prefix, peers []gossip.Peer,
	leases *ipam.LeaseTable, allocs []ipam.Allocation, now time.Time, grace time.Duration) (overlay.Desired, time.Time, map[string]string) {
	self, backend := local.Name, local.Backend
	d := overlay.Desired{Subnet: subnet, NodeAddrs: []netip.Addr{local.Underlay}, NodeOverlays: []netip.Addr{subnet.Addr()}}
	var next time.Time
	excluded := map[string]string{}
	for _, p := range peers {
		r := p.Record
		if !r.HasSubnet() && p.Live() {
			// A peer that is (re)starting may gossip its record before its
			// subnet; the lease table still knows what it holds.
			for _, c := range leases.ClaimsBy(r.Name) {
				if h, ok := leases.Holder(c.Subnet, now); ok && h.Owner == r.Name {
					r.Subnet = c.Subnet
				}
			}
		}
		switch {
		case r.Name == self:
			continue
		case r.Cluster.IsValid() && local.Cluster.IsValid() && (r.Cluster != local.Cluster || r.SubnetBits != local.SubnetBits):
			// Each side would reject the other's subnet claims.
			excluded[r.Name] = fmt.Sprintf("refused: pod space %s in /%d subnets, this node %s in /%d (all nodes of a fabric need the same --cluster-cidr and --subnet-prefix)",
				r.Cluster, r.SubnetBits, local.Cluster, local.SubnetBits)
			continue
		case !r.HasSubnet():
			excluded[r.Name] = "no subnet yet"
			continue
		case r.Subnet == subnet:
			excluded[r.Name] = "claims this node's subnet " + subnet.String()
			continue
		case r.Subnet.Bits() != subnet.Bits():
			excluded[r.Name] = "subnet " + r.Subnet.String() + " has the wrong size"
			continue
		case p.State == gossip.PeerLeft:
			excluded[r.Name] = "left the fabric"
			continue
		case backendFamily(r.Backend) != backendFamily(backend):
			excluded[r.Name] = fmt.Sprintf("refused: runs backend %s, this node runs %s (all nodes of a fabric need the same backend)", backendFamily(r.Backend), backendFamily(backend))
			continue
		case backendFamily(backend) == "wireguard" && len(r.WGPublicKey) != gossip.WGKeySize:
			excluded[r.Name] = "refused: no WireGuard public key in its record"
			continue
		case r.TunnelPort != 0 && local.TunnelPort != 0 && r.TunnelPort != local.TunnelPort:
			// Packets would go to a port the peer does not listen on.
			excluded[r.Name] = fmt.Sprintf("refused: receives %s on port %d, this node on %d (all nodes of a fabric need the same --%s-port)",
				backendFamily(backend), r.TunnelPort, local.TunnelPort, backendFamily(backend))
			continue
		case r.VNI != 0 && local.VNI != 0 && r.VNI != local.VNI:
			// The peer's device would drop this node's packets, and this
			// node's the peer's.
			excluded[r.Name] = fmt.Sprintf("refused: runs VNI %d, this node %d (all nodes of a fabric need the same --vni)", r.VNI, local.VNI)
			continue
		}
		h, held := leases.Holder(r.Subnet, now)
		if held && h.Owner != r.Name {
			excluded[r.Name] = "lost " + r.Subnet.String() + " to the older lease of " + h.Owner
			continue
		}
		if !p.Live() {
			if !held {
				excluded[r.Name] = "dead and its lease released"
				continue
			}
			end := p.Since.Add(grace)
			if !now.Before(end) {
				excluded[r.Name] = "dead for longer than the grace period"
				continue
			}
			if next.IsZero() || end.Before(next) {
				next = end
			}
		}
		d.Peers = append(d.Peers, overlay.Peer{Name: r.Name, Underlay: r.Underlay, VTEPMAC: r.VTEPMAC, Subnet: r.Subnet,
			WGPublicKey: r.WGPublicKey, RouteMTU: routeMTU(local.MTU, r.MTU)})
		d.NodeAddrs = append(d.NodeAddrs, r.Underlay)
		d.NodeOverlays = append(d.NodeOverlays, r.Subnet.Addr())
	}
	for _, al := range allocs {
		if subnet.Contains(al.IP) && al.HostIf != "" {
			d.Pods = append(d.Pods, overlay.PodRoute{IP: al.IP, HostIf: al.HostIf})
		}
	}
	return d, next, excluded
}

// routeMTU is the MTU of the route to a peer whose pods run at peerMTU:
// the peer's when it is smaller than this node's own (only some nodes have
// jumbo frames), so that the kernel here fragments a larger packet or
// answers "fragmentation needed" to its sender, instead of the underlay
// dropping it on the way; 0, the device's MTU, otherwise.
func routeMTU(own, peerMTU int) int {
	if peerMTU > 0 && peerMTU < own {
		return peerMTU
	}
	return 0
}

// claim takes the persisted subnet back when no older lease holds it,
// otherwise the first free subnet in this node's rendezvous order.
func (a *Agent) claim(persisted ipam.OwnLease, have bool) error {
	now := time.Now()
	if have {
		if err := a.cfg.space.Check(persisted.Subnet); err != nil {
			a.log.Warn("persisted lease does not fit the configured cluster; claiming a new subnet",
				zap.Stringer("subnet", persisted.Subnet), zap.Error(err))
			have = false
		}
	}
	if have {
		h, held := a.leases.Holder(persisted.Subnet, now)
		if !held || h.Owner == a.cfg.NodeName {
			return a.activate(persisted.Subnet, persisted.Epoch)
		}
		a.log.Error("persisted subnet is now held by another node; claiming a new one",
			zap.Stringer("subnet", persisted.Subnet), zap.String("holder", h.Owner))
	}
	if !have {
		// No local state (a reinstalled node): the fabric may still hold a
		// lease for this name, reserved since it died. Take it back.
		for _, c := range a.leases.ClaimsBy(a.cfg.NodeName) {
			if h, ok := a.leases.Holder(c.Subnet, now); ok && h.Owner == a.cfg.NodeName {
				a.log.Info("reclaiming the subnet the fabric kept for this node", zap.Stringer("subnet", c.Subnet))
				return a.activate(c.Subnet, c.Epoch)
			}
		}
	}
	_, err := a.claimFree(now)
	return err
}

// claimFree claims the first free subnet in this node's order.
func (a *Agent) claimFree(now time.Time) (netip.Prefix, error) {
	s, err := a.leases.PickFree(a.cfg.NodeName, now)
	if err != nil {
		return netip.Prefix{}, err
	}
	return s, a.activate(s, uint64(now.UnixNano()))
}

// waitForSubnet puts this node, which has no subnet it may use, into
// waiting for one (retryClaim): it stops advertising any and is not ready,
// with err as the reason, instead of serving a subnet another node holds.
func (a *Agent) waitForSubnet(err error) {
	a.stateMu.Lock()
	a.subnet, a.epoch, a.claimErr = netip.Prefix{}, 0, err
	a.stateMu.Unlock()
	a.log.Error("no free subnet for this node; it waits for one and is not ready meanwhile", zap.Error(err))
	if err := a.members.SetLocalRecord(a.record()); err != nil {
		a.log.Warn("gossip node record", zap.Error(err))
	}
}

// retryClaim claims a subnet for a node waiting for one: it found none
// free at start, or lost its own to an older lease with none to move to.
func (a *Agent) retryClaim(now time.Time) (claimed bool) {
	a.stateMu.Lock()
	waiting := a.claimErr != nil
	a.stateMu.Unlock()
	if !waiting {
		return false
	}
	s, err := a.claimFree(now)
	a.stateMu.Lock()
	a.claimErr = err
	a.stateMu.Unlock()
	if err == nil {
		a.log.Info("claimed a subnet that came free", zap.Stringer("subnet", s))
	}
	return err == nil
}

// activate makes this node's claim on subnet active, releases any other
// claim it holds, persists the lease and gossips both.
func (a *Agent) activate(subnet netip.Prefix, epoch uint64) error {
	c := ipam.Claim{Subnet: subnet, Owner: a.cfg.NodeName, Epoch: epoch, Version: 1, State: ipam.LeaseActive}
	if cur, ok := a.leases.ClaimOf(subnet, a.cfg.NodeName); ok {
		c.Epoch = max(c.Epoch, cur.Epoch)
		c.Version = cur.Version + 1
	}
	update := []ipam.Claim{c}
	now := time.Now()
	for _, old := range a.leases.ClaimsBy(a.cfg.NodeName) {
		if old.Subnet != subnet && old.State != ipam.LeaseReleased {
			update = append(update, old.Release(now))
		}
	}
	if _, err := a.leases.Merge(update...); err != nil {
		return fmt.Errorf("record claim on %s: %w", subnet, err)
	}
	if err := a.store.SaveLease(ipam.OwnLease{Subnet: subnet, Epoch: c.Epoch, Owner: a.cfg.NodeName}); err != nil {
		return fmt.Errorf("persist lease on %s: %w", subnet, err)
	}
	a.stateMu.Lock()
	a.subnet, a.epoch = subnet, c.Epoch
	a.stateMu.Unlock()
	a.broadcastClaims(update)
	if err := a.members.SetLocalRecord(a.record()); err != nil {
		a.log.Warn("gossip node record", zap.Error(err))
	}
	a.log.Info("lease claimed", zap.String("node", a.cfg.NodeName), zap.Stringer("subnet", subnet), zap.Uint64("epoch", c.Epoch))
	return nil
}

// conflictSettle is how long a node that lost its subnet to an older lease
// waits before it moves. A healing partition reaches a node in several
// merges (each peer's push/pull, memberlist's nodes before the claims that
// come with them): moving at the first sign, the node would pick from a
// lease table that still lacks claims on their way, such as those of
// nodes it had thought dead, and lose again.
const conflictSettle = time.Second

// checkLeases reacts to the lease table: it gives up this node's subnet if
// an older lease won it (once that has lasted conflictSettle), and
// reserves the subnets of dead peers.
func (a *Agent) checkLeases() (changed bool) {
	subnet := a.currentSubnet()
	now := time.Now()
	if !subnet.IsValid() {
		return a.retryClaim(now)
	}
	if h, ok := a.leases.Holder(subnet, now); ok && h.Owner != a.cfg.NodeName {
		if a.conflictSince.IsZero() {
			a.conflictSince = now
			time.AfterFunc(conflictSettle, a.trigger)
		}
		if now.Sub(a.conflictSince) < conflictSettle {
			return false
		}
		a.conflictSince = time.Time{}
		a.stateMu.Lock()
		a.conflicts++
		a.stateMu.Unlock()
		a.metrics.conflicts.Inc()
		a.log.Error("subnet conflict: an older lease holds this node's subnet; moving to another",
			zap.Stringer("subnet", subnet), zap.String("holder", h.Owner), zap.Uint64("holder_epoch", h.Epoch))
		if _, err := a.claimFree(now); errors.Is(err, ipam.ErrNoFreeSubnet) {
			// The subnet is another node's now: wait for one to come
			// free, instead of finding the same conflict on every pass.
			a.waitForSubnet(err)
		} else if err != nil {
			a.log.Error("claim replacement subnet", zap.Error(err))
		}
		return true // the next pass looks at the new subnet
	}
	a.conflictSince = time.Time{}
	if c, ok := a.leases.ClaimOf(subnet, a.cfg.NodeName); ok && c.State != ipam.LeaseActive {
		// A peer that thought this node dead reserved its lease; take it back.
		if err := a.activate(subnet, c.Epoch); err != nil {
			a.log.Error("reactivate own lease", zap.Error(err))
		}
		changed = true
	}
	var update []ipam.Claim
	peers := a.members.Peers()
	if a.releaseDeletedNodes(peers) {
		changed = true
	}
	for _, p := range peers {
		if p.Live() {
			continue
		}
		for _, c := range a.leases.ClaimsBy(p.Record.Name) {
			if c.State != ipam.LeaseActive {
				continue
			}
			c.Version++
			c.State = ipam.LeaseReserved
			c.Expires = p.Since.Add(a.cfg.LeaseTTL).Unix()
			update = append(update, c)
			a.log.Info("lease reserved for dead node", zap.String("node", c.Owner), zap.Stringer("subnet", c.Subnet),
				zap.Time("until", time.Unix(c.Expires, 0)))
		}
	}
	update = append(update, a.reserveUnheard(peers, now)...)
	if len(update) > 0 {
		if _, err := a.leases.Merge(update...); err != nil {
			a.log.Warn("record reservations", zap.Error(err))
			return changed
		}
		a.broadcastClaims(update)
		changed = true
	}
	return changed
}

// broadcastClaims gossips claim updates in packet-sized messages.
func (a *Agent) broadcastClaims(claims []ipam.Claim) {
	for _, msg := range ipam.EncodeClaimMessages(claims) {
		a.members.Broadcast(msg)
	}
}

// errNotReady is returned by API calls that need a subnet.
var errNotReady = errors.New("node has no subnet yet")

// backendFamily is the backend a node's packets need: "vxlan+direct"
// talks to "vxlan" (direct routing falls back to VXLAN), "wireguard" to
// nothing else. An empty name is an agent from before backends were
// gossiped: VXLAN.
func backendFamily(name string) string {
	family, _, _ := strings.Cut(name, "+")
	if family == "" {
		return "vxlan"
	}
	return family
}
