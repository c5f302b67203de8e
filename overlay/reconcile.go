package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/loomnet/loom/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Firewaller programs Loom's nftables table. It is an interface so unit
// tests of the reconciler need no nftables.
type Firewaller interface {
	// Apply makes Loom's table match the spec; it writes only on change.
	Apply(spec FirewallSpec) (changed bool, err error)
	// AddPod and RemovePod change one pod's anti-spoof entries in the
	// table in force, the fast path of attaching and detaching a pod.
	AddPod(p PodRoute) error
	RemovePod(hostIf string) error
	// ApplyPolicy puts another compiled policy in force in the table as
	// the last Apply left it; false when there is none yet.
	ApplyPolicy(c *policy.Compiled) (applied bool, err error)
	// Keep leaves a table of a run before this one as it is but for its
	// member nodes, which follow spec; without one it is Apply.
	Keep(spec FirewallSpec) (changed bool, err error)
}

// Result says what one Apply did.
type Result struct {
	// Writes is the number of kernel writes made.
	Writes int
	// DeviceChanged is true when the tunnel device was created or repaired.
	DeviceChanged bool
	// Added and Removed count entries by kind ("neigh+fdb", "route").
	Added, Removed map[string]int
	// ForwardingRestored is true when IPv4 forwarding was found off and
	// turned on again.
	ForwardingRestored bool
}

// Dataplane reconciles the desired state into the kernel.
type Dataplane struct {
	k         Kernel
	backend   Backend
	fw        Firewaller
	cluster   netip.Prefix
	vxlanPort int
	// tunnelIPv6 is DataplaneConfig.TunnelIPv6.
	tunnelIPv6 bool
	podToHost  []PortRule
	// noMasquerade is DataplaneConfig.NoMasquerade.
	noMasquerade bool
	antiSpoof    string
	sysctl       func(key, value string) (bool, error)

	// applyMu serialises Apply: reconciling from two goroutines at once
	// would interleave diffs against a kernel both are changing.
	applyMu sync.Mutex

	onDetachError func(hostIf string, err error)
	// detachMu guards detaching: host veths cut off and being deleted in
	// the background.
	detachMu  sync.Mutex
	detaching map[string]detachment
}

// DataplaneConfig wires a Dataplane.
type DataplaneConfig struct {
	Kernel   Kernel
	Backend  Backend
	Firewall Firewaller // nil: no firewall rules (tests)
	Cluster  netip.Prefix
	// VXLANPort is guarded so only member nodes may send to it (0: open).
	VXLANPort int
	// TunnelIPv6 says the underlay is IPv6, so the VXLAN port's guard
	// filters IPv6 senders.
	TunnelIPv6 bool
	// NoMasquerade keeps pods' source address on traffic leaving the
	// cluster (see FirewallSpec).
	NoMasquerade bool
	// PodToHost is what pods may reach on the node itself besides ICMP;
	// nil turns that filter off.
	PodToHost []PortRule
	// AntiSpoof is how pods are kept to their own source address:
	// AntiSpoofNFTables (set entries per pod) or AntiSpoofRPFilter (strict
	// reverse-path filtering on each host veth). Empty: nftables.
	AntiSpoof string
	// Sysctl sets a /proc/sys key and reports whether it wrote: IPv4
	// forwarding, and rp_filter for AntiSpoofRPFilter (nil in unit tests).
	Sysctl func(key, value string) (bool, error)
	// OnDetachError hears of a pod veth the background deletion could not
	// remove (it stays down, routeless, for the runtime's netns removal or
	// CNI GC); nil ignores it.
	OnDetachError func(hostIf string, err error)
}

// NewDataplane returns a reconciler.
func NewDataplane(cfg DataplaneConfig) *Dataplane {
	if cfg.AntiSpoof == "" {
		cfg.AntiSpoof = AntiSpoofNFTables
	}
	return &Dataplane{k: cfg.Kernel, backend: cfg.Backend, fw: cfg.Firewall, cluster: cfg.Cluster,
		vxlanPort: cfg.VXLANPort, tunnelIPv6: cfg.TunnelIPv6, noMasquerade: cfg.NoMasquerade, podToHost: cfg.PodToHost, antiSpoof: cfg.AntiSpoof, sysctl: cfg.Sysctl,
		onDetachError: cfg.OnDetachError, detaching: map[string]detachment{}}
}

type routeKey struct {
	dst   netip.Prefix
	table int
}

func keyOf(r netlink.Route) (routeKey, bool) {
	p, ok := prefixOf(r.Dst)
	if !ok {
		return routeKey{}, false
	}
	t := r.Table
	if t == 0 {
		t = mainTable
	}
	return routeKey{p, t}, true
}

// routeType treats 0 as unicast: the kernel reports RTN_UNICAST for routes
// that were installed without a type.
func routeType(r netlink.Route) int {
	if r.Type == 0 {
		return unix.RTN_UNICAST
	}
	return r.Type
}

func sameRoute(a, b netlink.Route) bool {
	return a.LinkIndex == b.LinkIndex && a.Gw.Equal(b.Gw) && sameVia(a.Via, b.Via) && routeType(a) == routeType(b) &&
		a.Protocol == b.Protocol && a.Flags&int(netlink.FLAG_ONLINK) == b.Flags&int(netlink.FLAG_ONLINK) &&
		a.Src.Equal(b.Src) && a.Scope == b.Scope && a.MTU == b.MTU
}

// sameVia compares routes' next hops of another family (RTA_VIA).
func sameVia(a, b netlink.Destination) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(b)
}

// Apply brings the kernel to d. It makes as much progress as it can and
// returns every failure joined, so one bad entry never blocks the rest.
func (dp *Dataplane) Apply(d Desired) (Result, error) {
	dp.applyMu.Lock()
	defer dp.applyMu.Unlock()
	res := Result{Added: map[string]int{}, Removed: map[string]int{}}
	if !d.Subnet.IsValid() {
		return res, errors.New("apply data plane: node has no subnet yet")
	}
	var errs []error
	if dp.sysctl != nil {
		// Set at start, but anyone may switch it off (a sysctl reload).
		wrote, err := dp.sysctl(IPForwardKey, "1")
		res.ForwardingRestored = wrote
		if wrote {
			res.Writes++
		}
		errs = append(errs, err)
	}
	overlayIP := d.Subnet.Addr()
	changed, err := dp.backend.EnsureDevice(overlayIP)
	res.DeviceChanged = changed
	if changed {
		res.Writes++
	}
	if err != nil {
		return res, errors.Join(append(errs, fmt.Errorf("ensure %s device: %w", dp.backend.Name(), err))...)
	}
	peers := append([]Peer(nil), d.Peers...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })

	// 1. Per-peer L2 state before any route uses it.
	n, err := dp.backend.AddPeers(peers)
	res.Writes += n
	res.Added["neigh+fdb"] += n
	errs = append(errs, err)

	// 2. Routes: peers, local pods, and the own subnet's unreachable catch-all.
	want := dp.backend.PeerRoutes(peers)
	podRoutes, attached, podWrites, podErr := dp.podRoutes(d.Pods, overlayIP)
	res.Writes += podWrites
	errs = append(errs, podErr)
	want = append(want, podRoutes...)
	want = append(want, netlink.Route{Dst: ipNetOf(d.Subnet), Type: unix.RTN_UNREACHABLE,
		Protocol: RouteProtocol, Table: mainTable})
	added, removed, err := dp.syncRoutes(want, !d.Adopt)
	res.Writes += added + removed
	res.Added["route"] += added
	res.Removed["route"] += removed
	errs = append(errs, err)

	// 3. Per-peer L2 state nobody routes through any more.
	if !d.Adopt {
		n, err = dp.backend.RemoveStale(peers)
		res.Writes += n
		res.Removed["neigh+fdb"] += n
		errs = append(errs, err)
	}

	// 4. Firewall and NAT.
	if dp.fw != nil {
		spec := FirewallSpec{
			Cluster: dp.cluster, NodeAddrs: d.NodeAddrs, NodeOverlays: d.NodeOverlays,
			VXLANPort: dp.vxlanPort, TunnelIPv6: dp.tunnelIPv6, NoMasquerade: dp.noMasquerade, PodToHost: dp.podToHost, Policy: d.Policy,
		}
		if dp.antiSpoof == AntiSpoofNFTables {
			spec.Pods = attached
		}
		apply := dp.fw.Apply
		if d.KeepFirewall {
			apply = dp.fw.Keep
		}
		fwChanged, err := apply(spec)
		if fwChanged {
			res.Writes++
		}
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// podRoutes prepares the host end of each pod's veth (up, gateway address)
// and returns the /32 routes to pods whose veth exists. Routes carry the
// node's overlay address as source, so a node talking to its own pods is
// seen with an address of the cluster, never the link-local gateway.
func (dp *Dataplane) podRoutes(pods []PodRoute, overlayIP netip.Addr) ([]netlink.Route, []PodRoute, int, error) {
	if len(pods) == 0 {
		return nil, nil, 0, nil
	}
	var errs []error
	// Without the listing every veth gets its gateway written again: its
	// pod keeps its route, which leaving it out would remove.
	gateways, err := dp.linksWithGateway()
	if err != nil {
		errs = append(errs, err)
	}
	linkByName := dp.podLinks(len(pods))
	var out []netlink.Route
	var attached []PodRoute
	writes := 0
	for _, p := range pods {
		if dp.Detaching(p.HostIf) {
			continue // cut off for good; bringing it up again would revive it
		}
		l, n, err := dp.ensurePodHost(p.HostIf, linkByName, gateways)
		writes += n
		if errors.Is(err, ErrLinkNotFound) {
			continue // the pod's netns is gone or ADD has not moved it yet
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, netlink.Route{
			LinkIndex: l.Attrs().Index, Dst: ipNetOf(netip.PrefixFrom(p.IP, 32)),
			Scope: netlink.SCOPE_LINK, Src: ipOf(overlayIP), Protocol: RouteProtocol, Table: mainTable,
		})
		attached = append(attached, p)
	}
	return out, attached, writes, errors.Join(errs...)
}

// podGatewayHost is the gateway address as each pod veth's host end holds it.
var podGatewayHost = netip.PrefixFrom(PodGateway, 32)

// linksWithGateway returns the indexes of the links that have the pods'
// gateway address, from one dump of the node's addresses. Asking for one
// link's addresses dumps every link's (netlink filters them here), so
// asking per pod made a reconcile's cost grow with the square of the
// node's pods: at 220 pods each reconcile, and so each CNI ADD, took
// about 60 ms.
func (dp *Dataplane) linksWithGateway() (map[int]bool, error) {
	addrs, err := dp.k.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := map[int]bool{}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == podGatewayHost {
			out[a.LinkIndex] = true
		}
	}
	return out, nil
}

// podLinksDumpedFrom is how many pods a reconcile looks up from one dump
// of the node's links rather than one request each.
const podLinksDumpedFrom = 8

// podLinks returns how to look up the host veths of count pods: one by
// one for a few (a CNI ADD attaches one), else in one dump of the node's
// links, which costs a reconcile of 240 pods about 3 ms instead of 5 ms
// for a request per veth. If the dump fails, one by one.
func (dp *Dataplane) podLinks(count int) func(name string) (netlink.Link, error) {
	if count < podLinksDumpedFrom {
		return dp.k.LinkByName
	}
	links, err := dp.k.LinkList()
	if err != nil {
		return dp.k.LinkByName
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	return func(name string) (netlink.Link, error) {
		if l, ok := byName[name]; ok {
			return l, nil
		}
		return nil, fmt.Errorf("%s: %w", name, ErrLinkNotFound)
	}
}

// ensurePodHost brings a pod's host veth up with the gateway address;
// gateways are the links that have it (see linksWithGateway).
func (dp *Dataplane) ensurePodHost(hostIf string, linkByName func(string) (netlink.Link, error), gateways map[int]bool) (netlink.Link, int, error) {
	l, err := linkByName(hostIf)
	if err != nil {
		return nil, 0, err
	}
	writes := 0
	if !gateways[l.Attrs().Index] {
		if err := dp.k.AddrReplace(l, &netlink.Addr{IPNet: ipNetOf(podGatewayHost), Scope: int(netlink.SCOPE_LINK)}); err != nil {
			return nil, writes, fmt.Errorf("add gateway %s to %s: %w", podGatewayHost, hostIf, err)
		}
		writes++
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := dp.k.LinkSetUp(l); err != nil {
			return nil, writes, fmt.Errorf("set %s up: %w", hostIf, err)
		}
		writes++
	}
	if dp.antiSpoof == AntiSpoofRPFilter && dp.sysctl != nil {
		// Strict: a packet from the veth must have a source the node routes
		// back through that veth, i.e. the pod's own address.
		wrote, err := dp.sysctl("net/ipv4/conf/"+hostIf+"/rp_filter", "1")
		if err != nil {
			return nil, writes, err
		}
		if wrote {
			writes++
		}
	}
	return l, writes, nil
}

// syncRoutes makes the Loom routes equal want: missing or different ones are
// replaced, then Loom-tagged routes and routes on the tunnel device that are
// not wanted are removed. Routes of others elsewhere are never touched.
func (dp *Dataplane) syncRoutes(want []netlink.Route, remove bool) (added, removed int, err error) {
	// One dump of the table, sorted here: Loom's routes and those on the
	// tunnel device are mostly the same ones, and at thousands of peers each
	// dump costs more than the whole rest of a no-op reconcile.
	current, err := dp.k.RouteList(netlink.FAMILY_V4, &netlink.Route{Table: mainTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, 0, fmt.Errorf("list routes: %w", err)
	}
	dev := dp.backend.DeviceIndex()
	// Indexes into current, not copies: a route is a few hundred bytes.
	have := make(map[routeKey]int, len(want))
	for i := range current {
		r := &current[i]
		if r.Protocol != RouteProtocol && (dev <= 0 || r.LinkIndex != dev) {
			continue
		}
		if k, ok := keyOf(*r); ok {
			have[k] = i
		}
	}
	wanted := make(map[routeKey]bool, len(want))
	var errs []error
	for i := range want {
		r := &want[i]
		k, _ := keyOf(*r)
		wanted[k] = true
		if old, ok := have[k]; ok && sameRoute(current[old], *r) {
			continue
		}
		if err := dp.k.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("program route to %s: %w", k.dst, err))
			continue
		}
		added++
	}
	for k, i := range have {
		if wanted[k] || !remove {
			continue
		}
		r := current[i]
		if err := dp.k.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("remove stale route to %s: %w", k.dst, err))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}

// DetachPod cuts a pod off at once and deletes its host veth (with the
// pod end) in the background. Setting the veth down takes its route with
// it and stops every packet, and its anti-spoof entries are retired;
// destroying a network device, though, waits for an RCU grace period in
// the kernel, tens of milliseconds that a CNI DEL need not spend (the
// runtime's netns removal pays it again anyway). netns is the pod's network namespace
// path, if known. WaitDetached waits for the deletion. A veth already
// gone, or already detaching, is a no-op.
func (dp *Dataplane) DetachPod(hostIf, netns string) error {
	dp.applyMu.Lock()
	defer dp.applyMu.Unlock()
	if dp.Detaching(hostIf) {
		return nil
	}
	l, err := dp.k.LinkByName(hostIf)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", hostIf, err)
	}
	if err := dp.k.LinkSetDown(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("set %s down: %w", hostIf, err)
	}
	if dp.fw != nil && dp.antiSpoof == AntiSpoofNFTables {
		if err := dp.fw.RemovePod(hostIf); err != nil {
			return err
		}
	}
	wait, expedite := context.WithTimeout(context.Background(), detachDelay)
	d := detachment{netns: netns, done: make(chan struct{}), expedite: expedite}
	dp.detachMu.Lock()
	dp.detaching[hostIf] = d
	dp.detachMu.Unlock()
	go func() {
		// The runtime removes the pod's netns right after DEL, and the
		// kernel then destroys the pair together with the namespace's other
		// devices, one grace period for all; deleting it first would pay
		// one more. So wait a little, unless an ADD needs the name.
		<-wait.Done()
		expedite()
		err := dp.k.LinkDel(l) // by index: never a newer veth of the same name
		dp.detachMu.Lock()
		delete(dp.detaching, hostIf)
		dp.detachMu.Unlock()
		close(d.done)
		if err != nil && dp.onDetachError != nil {
			dp.onDetachError(hostIf, fmt.Errorf("delete %s: %w", hostIf, err))
		}
	}()
	return nil
}

// Detaching reports whether hostIf is cut off and awaiting deletion.
func (dp *Dataplane) Detaching(hostIf string) bool {
	dp.detachMu.Lock()
	defer dp.detachMu.Unlock()
	_, ok := dp.detaching[hostIf]
	return ok
}

// detachDelay is how long a detached pod veth is left for the runtime's
// netns removal to destroy before Loom deletes it itself.
const detachDelay = 2 * time.Second

// detachment is a pod veth being deleted in the background.
type detachment struct {
	netns    string             // the pod end's namespace path, "" if unknown
	done     chan struct{}      // closed once the veth is gone
	expedite context.CancelFunc // deletes without waiting out detachDelay
}

// WaitDetached returns once the background deletions of hostIf and of any
// pod veth whose pod end is in netns have finished, so an ADD finds
// neither name taken; with both empty it waits for every deletion.
func (dp *Dataplane) WaitDetached(hostIf, netns string) {
	dp.detachMu.Lock()
	var pending []chan struct{}
	for name, d := range dp.detaching {
		if hostIf == "" && netns == "" || name == hostIf || netns != "" && d.netns == netns {
			d.expedite()
			pending = append(pending, d.done)
		}
	}
	dp.detachMu.Unlock()
	for _, done := range pending {
		<-done
	}
}

// PodVeths lists the host ends of pod veths present in the kernel.
func (dp *Dataplane) PodVeths() ([]string, error) {
	return dp.podVeths(func(netlink.Link) bool { return true })
}

// DownPodVeths lists the host ends of pod veths that are down: detached,
// or never attached. A pod in service has its veth up.
func (dp *Dataplane) DownPodVeths() ([]string, error) {
	return dp.podVeths(func(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp == 0 })
}

func (dp *Dataplane) podVeths(keep func(netlink.Link) bool) ([]string, error) {
	links, err := dp.k.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && IsPodVethName(l.Attrs().Name) && keep(l) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// AttachPod prepares a pod's host veth, installs its /32 route and its
// anti-spoof entries now, rather than waiting for the next reconcile, so
// ADD returns a pod that is already reachable and already guarded.
func (dp *Dataplane) AttachPod(p PodRoute, overlayIP netip.Addr) error {
	dp.applyMu.Lock()
	defer dp.applyMu.Unlock()
	routes, _, _, err := dp.podRoutes([]PodRoute{p}, overlayIP)
	if err != nil {
		return err
	}
	if len(routes) == 0 {
		return fmt.Errorf("attach pod %s: host veth %s: %w", p.IP, p.HostIf, ErrLinkNotFound)
	}
	if err := dp.k.RouteReplace(&routes[0]); err != nil {
		return fmt.Errorf("program route to pod %s via %s: %w", p.IP, p.HostIf, err)
	}
	if dp.fw != nil && dp.antiSpoof == AntiSpoofNFTables {
		return dp.fw.AddPod(p)
	}
	return nil
}

// ApplyPolicy puts compiled network policy in force at once, leaving the
// rest of the data plane as the last Apply left it: a pod just attached
// must not run before its rules, and a whole Apply (every route, link and
// neighbour listed again) costs a node running many pods far more. It
// reports false, having done nothing, when there is no firewall in force
// to build on (none configured, or no Apply yet): then only Apply will do.
func (dp *Dataplane) ApplyPolicy(c *policy.Compiled) (bool, error) {
	dp.applyMu.Lock()
	defer dp.applyMu.Unlock()
	if dp.fw == nil {
		return false, nil
	}
	return dp.fw.ApplyPolicy(c)
}

// Teardown removes everything Loom programmed: the device (with its
// neighbours, FDB and routes), Loom-tagged routes and the firewall table.
// Only a node leaving the fabric does this; restarts never do.
func (dp *Dataplane) Teardown() error {
	var errs []error
	errs = append(errs, dp.backend.Teardown())
	if _, _, err := dp.syncRoutes(nil, true); err != nil {
		errs = append(errs, err)
	}
	if t, ok := dp.fw.(interface{ Teardown() error }); ok {
		errs = append(errs, t.Teardown())
	}
	return errors.Join(errs...)
}
