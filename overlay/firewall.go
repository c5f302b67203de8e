package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/loomnet/loom/policy"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// FirewallTable is the nftables table Loom owns; nothing outside it is
// ever touched.
const FirewallTable = "loom"

// FirewallSpec is what Loom's nftables table should express.
type FirewallSpec struct {
	// Cluster is the pod address space.
	Cluster netip.Prefix
	// NodeAddrs are the underlay addresses of member nodes; pod traffic to
	// them keeps its source, as the Kubernetes network model requires, and
	// only they may send VXLAN packets to this node.
	NodeAddrs []netip.Addr
	// NodeOverlays are the overlay addresses of member nodes (this one
	// included): traffic from them to this node is node traffic, not pods'.
	NodeOverlays []netip.Addr
	// VXLANPort is the VXLAN UDP port to guard; 0 leaves it open.
	VXLANPort int
	// TunnelIPv6 says the tunnel runs over IPv6: the VXLAN port's guard
	// then lives in an ip6 table of the same name, as an ip table sees
	// no IPv6 packet.
	TunnelIPv6 bool
	// Pods are this node's pods: each host veth may only carry its pod's
	// own source address.
	Pods []PodRoute
	// NoMasquerade leaves pods' traffic to the outside with their own
	// source address (the underlay routes the pod network); by default it
	// gets the node's.
	NoMasquerade bool
	// PodToHost lists what pods may open towards this node itself, besides
	// ICMP and replies: entries like "tcp/53". Nil allows everything (the
	// filter is off).
	PodToHost []PortRule
	// Policy is compiled network policy for this node's pods; nil programs
	// none (everything is allowed).
	Policy *policy.Compiled
	// layout is Policy laid out in chains and verdict maps, once computed
	// (see withPolicyLayout).
	layout *policyLayout
}

// withPolicyLayout returns s with its policy's layout computed, for the
// several comparisons of one Apply.
func (s FirewallSpec) withPolicyLayout() FirewallSpec {
	l := layoutPolicy(s.Policy)
	s.layout = &l
	return s
}

// policyLayout is the policy's layout, computed now unless it was.
func (s FirewallSpec) policyLayout() policyLayout {
	if s.layout != nil {
		return *s.layout
	}
	return layoutPolicy(s.Policy)
}

// PortRule is one protocol and port pods may reach on their node.
type PortRule struct {
	Proto string // "tcp" or "udp"
	Port  uint16
}

// ParsePortRule parses "tcp/53" or "udp/53".
func ParsePortRule(s string) (PortRule, error) {
	proto, port, ok := strings.Cut(s, "/")
	if !ok || (proto != "tcp" && proto != "udp") {
		return PortRule{}, fmt.Errorf("%q: want tcp/PORT or udp/PORT", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return PortRule{}, fmt.Errorf("%q: %q is not a port", s, port)
	}
	return PortRule{Proto: proto, Port: uint16(n)}, nil
}

// A spec has two fingerprints: rules covers everything but the contents
// of the sets and maps, and sets covers those of the address and pod sets
// (the policy's elements are compared as they are, see
// policyElementChanges). Two specs with the same rules differ only in
// elements, which can be changed in place: member and pod changes never
// touch the rules, and under policy pods coming, going or relabelled touch
// them only when a rule set appears or goes (see policyRulesFingerprint).
func (s FirewallSpec) rulesFingerprint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s port=%d v6=%v nomasq=%v %v;%v;", s.Cluster, s.VXLANPort, s.TunnelIPv6, s.NoMasquerade, s.PodToHost == nil, s.PodToHost)
	b.WriteString(policyRulesFingerprint(s.Policy, s.policyLayout()))
	return b.String()
}

func (s FirewallSpec) setsFingerprint() string {
	var b strings.Builder
	for _, set := range [][]netip.Addr{s.NodeAddrs, s.NodeOverlays} {
		addrs := slices.Clone(set)
		slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		fmt.Fprintf(&b, "%v;", addrs)
	}
	pods := slices.Clone(s.Pods)
	slices.SortFunc(pods, func(a, b PodRoute) int { return strings.Compare(a.HostIf, b.HostIf) })
	fmt.Fprintf(&b, "%v", pods)
	return b.String()
}

// NFTables is the real Firewaller: one table, a chain per concern,
// replaced whole in a single netlink batch so no packet ever sees half a
// rule set. Changes confined to elements of sets and maps (member nodes,
// pods, policy peers) are made by adding and deleting elements, also in
// one batch: a join or a pod ADD must not rebuild every chain.
type NFTables struct {
	// mu guards the fields below.
	mu sync.Mutex
	// written is set once the table was written; spec is what it holds,
	// with its fingerprints.
	written         bool
	spec            FirewallSpec
	rulesFP, setsFP string
	policyChains    []string
	// stale are anti-spoof entries of detached pods still in the kernel's
	// sets, by host veth (see RemovePod).
	stale map[string]PodRoute
	// wroteOwn is set once this run wrote the table, and stays set (unlike
	// written, which Invalidate clears): from then on the table is this
	// run's, repaired and rewritten as specs say, never kept (see Keep).
	// lastRun is set once a table of a run before this one was found.
	wroteOwn, lastRun bool
}

var _ Firewaller = (*NFTables)(nil)

// NewNFTables returns a Firewaller for the current network namespace.
func NewNFTables() *NFTables { return &NFTables{stale: map[string]PodRoute{}} }

// tablesExist reports whether the tables spec needs are there.
func (f *NFTables) tablesExist(c *nftables.Conn, spec FirewallSpec) (bool, error) {
	families := []nftables.TableFamily{nftables.TableFamilyIPv4}
	if spec.guardsIPv6() {
		families = append(families, nftables.TableFamilyIPv6)
	}
	for _, family := range families {
		if ok, err := hasLoomTable(c, family); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// hasLoomTable reports whether Loom's table of a family exists.
func hasLoomTable(c *nftables.Conn, family nftables.TableFamily) (bool, error) {
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == FirewallTable }), nil
}

// FindLastRun looks for Loom's table (the IPv4 one, which every node has)
// before this run writes one: a table a run before this one left, which
// Keep keeps (see KeepsLastRun).
func (f *NFTables) FindLastRun() error {
	_, ok, err := openInKernel()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastRun = f.lastRun || ok
	return err
}

// openInKernel opens nftables and reports whether Loom's IPv4 table is
// there.
func openInKernel() (*nftables.Conn, bool, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, false, fmt.Errorf("open nftables: %w", err)
	}
	ok, err := hasLoomTable(c, nftables.TableFamilyIPv4)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables tables: %w", err)
	}
	return c, ok, nil
}

// KeepsLastRun reports whether the table in the kernel is one a run
// before this one left, found by FindLastRun or Keep, which Keep keeps:
// this run has written none.
func (f *NFTables) KeepsLastRun() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastRun && !f.wroteOwn
}

// Invalidate makes the next Apply write the whole table again: someone
// else changed it in ways Apply does not look for (it checks only that the
// table exists).
func (f *NFTables) Invalidate() {
	f.mu.Lock()
	f.written = false
	f.mu.Unlock()
}

// Apply implements Firewaller. It writes only when the spec changed or the
// table was removed behind Loom's back, and rewrites the table only when
// more than set contents changed.
func (f *NFTables) Apply(spec FirewallSpec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.apply(spec)
}

// ApplyPolicy implements Firewaller: the spec in force, with c for policy.
func (f *NFTables) ApplyPolicy(c *policy.Compiled) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.written {
		return false, nil
	}
	spec := f.spec
	spec.Policy, spec.layout = c, nil
	_, err := f.apply(spec)
	return true, err
}

// apply is Apply, called with mu held.
func (f *NFTables) apply(spec FirewallSpec) (bool, error) {
	spec = spec.withPolicyLayout()
	if !f.written || spec.rulesFingerprint() != f.rulesFP {
		return true, f.write(spec)
	}
	// A new node's pods can join policy sets by the thousand in one batch.
	c, err := nftables.New(nftables.WithSockOptions(largeBatchBuffers))
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	ok, err := f.tablesExist(c, spec)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	if !ok {
		return true, f.write(spec)
	}
	if spec.setsFingerprint() == f.setsFP {
		// Nodes and pods are the same: only policy elements can differ.
		changes := policyElementChanges(loomTable(), f.spec, spec)
		if len(changes) == 0 {
			if len(f.stale) < staleSweep {
				return false, nil
			}
			return true, f.sweepStale(c)
		}
		err = f.changeSets(c, spec, changes, f.stale)
	} else {
		err = f.updateSets(c, spec)
	}
	if err != nil {
		// The sets are not what Loom thinks: write all of it.
		return true, f.write(spec)
	}
	return true, nil
}

// write replaces the whole table with spec in one batch. Called with mu held.
func (f *NFTables) write(spec FirewallSpec) error {
	c, err := nftables.New(nftables.WithSockOptions(largeBatchBuffers))
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := loomTable()
	// Add-then-delete makes the delete valid whether or not the table
	// existed; the whole batch commits atomically.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	nodes, overlays := addrSets(t)
	if err := c.AddSet(nodes, addrElements(spec.NodeAddrs, false)); err != nil {
		return fmt.Errorf("build nftables set %s: %w", setNodes, err)
	}
	if err := c.AddSet(overlays, addrElements(spec.NodeOverlays, false)); err != nil {
		return fmt.Errorf("build nftables set %s: %w", setNodeOverlays, err)
	}
	if !spec.NoMasquerade {
		addMasquerade(c, t, spec, nodes)
	}
	if spec.VXLANPort > 0 {
		addVXLANIngress(c, t, nodes)
	}
	if err := addPodAntiSpoof(c, t, spec); err != nil {
		return err
	}
	if spec.PodToHost != nil {
		addPodToHost(c, t, spec, overlays)
	}
	var policyChains []string
	if spec.Policy != nil {
		var err error
		if policyChains, err = addPolicy(c, t, spec.Policy, spec.policyLayout()); err != nil {
			return err
		}
	}
	addBaseChains(c, t, spec)
	if err := writeIPv6Guard(c, spec); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program nftables table %s: %w", FirewallTable, err)
	}
	f.written, f.wroteOwn, f.spec = true, true, spec
	f.rulesFP, f.setsFP = spec.rulesFingerprint(), spec.setsFingerprint()
	f.policyChains = policyChains
	clear(f.stale)
	return nil
}

// Teardown deletes Loom's table.
func (f *NFTables) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := loomTable()
	c.AddTable(t)
	c.DelTable(t)
	if err := writeIPv6Guard(c, FirewallSpec{}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", FirewallTable, err)
	}
	f.written = false
	return nil
}

// batchBufferSize bounds one atomic table replacement: a policy set of
// thousands of rules is megabytes of netlink messages, sent in one batch
// and acknowledged message by message.
const batchBufferSize = 64 << 20

// largeBatchBuffers lifts the socket's buffers above the system default
// (net.core.wmem_max), which a large table exceeds with EMSGSIZE or
// ENOBUFS. The forced variants need CAP_NET_ADMIN, which loomd has; the
// kernel allocates only what a batch uses.
func largeBatchBuffers(conn *netlink.Conn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBufferSize); e != nil {
			serr = fmt.Errorf("netlink send buffer: %w", e)
			return
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchBufferSize); e != nil {
			serr = fmt.Errorf("netlink receive buffer: %w", e)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// addrElements are the addresses of one family (IPv6 or IPv4) as set
// elements.
func addrElements(addrs []netip.Addr, ipv6 bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if a.Is6() == ipv6 && !seen[a] {
			seen[a] = true
			out = append(out, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	return out
}

// addMasquerade builds the masquerade chain: pod traffic leaving for
// anything but pods, member nodes or multicast gets the node's address.
func addMasquerade(c *nftables.Conn, t *nftables.Table, spec FirewallSpec, nodes *nftables.Set) {
	ch := c.AddChain(&nftables.Chain{
		Name: "masquerade", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	cluster := spec.Cluster
	multicast := netip.MustParsePrefix("224.0.0.0/4")
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	// Not from a pod: not ours to rewrite.
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(matchPrefix(12, cluster, true), ret)})
	// Pod to pod, pod to node, multicast: keep the source.
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(matchPrefix(16, cluster, false), ret)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID},
		ret,
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(matchPrefix(16, multicast, false), ret)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Counter{}, &expr.Masq{}}})
}

// Chains whose last rule counts the packets it drops; Dropped reads them.
const (
	ChainVXLANIngress = "vxlan-ingress"
	ChainPodAntiSpoof = "pod-antispoof"
	ChainPodToHost    = "pod-to-host"
)

// addVXLANIngress drops VXLAN packets from anyone but member nodes: the
// kernel would otherwise decapsulate whatever arrives with the right VNI,
// letting any host on the underlay inject packets into pods. The input
// chain jumps here with VXLAN packets only.
func addVXLANIngress(c *nftables.Conn, t *nftables.Table, nodes *nftables.Set) {
	ch := c.AddChain(&nftables.Chain{Name: ChainVXLANIngress, Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
}

// The base chains: every packet a node receives pays for each base chain
// on its hook, so each hook has one, which jumps to the guards.
const (
	chainInput   = "input"
	chainForward = "forward"
)

// addBaseChains builds the hooks' chains, which jump to the others (so
// they come last: a jump must name an existing chain). Input: pods'
// packets go to pod-antispoof, VXLAN packets to vxlan-ingress, packets
// from the pod network to pod-to-host. Forward: pods' packets go to
// pod-antispoof, then every packet to policy, if any.
func addBaseChains(c *nftables.Conn, t *nftables.Table, spec FirewallSpec) {
	in := c.AddChain(&nftables.Chain{
		Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: podAntiSpoofJump()})
	if spec.VXLANPort > 0 {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(spec.VXLANPort))},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainVXLANIngress},
		}})
	}
	if spec.PodToHost != nil {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(matchPrefix(12, spec.Cluster, false),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainPodToHost})})
	}
	fwd := c.AddChain(&nftables.Chain{
		Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	// Anti-spoofing first: policy accepts established flows, which a
	// spoofed packet may claim to belong to.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: podAntiSpoofJump()})
	if spec.Policy != nil {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainPolicy}}})
	}
}

// The first five bytes of every pod veth's name lie in this range (see
// api.HostVethName: "loom" and lowercase hex); the overlay devices'
// ("loom.N", "loom-wg") do not.
const (
	podVethRangeFrom = "loom0"
	podVethRangeTo   = "loomf"
)

// ifname is an interface name as nftables compares it: NUL-padded.
func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// addPodAntiSpoof drops packets a pod sends with any source address but
// its own, before they reach another pod, another node or this one. One
// rule with two set lookups costs a packet the same at 10 pods as at 250,
// and lets a pod be added or removed by changing set elements instead of
// rewriting the table. The forward and input chains jump here with
// packets from pod veths only (podAntiSpoofJump).
func addPodAntiSpoof(c *nftables.Conn, t *nftables.Table, spec FirewallSpec) error {
	veths, sources := podSets(t)
	var vethElems, sourceElems []nftables.SetElement
	for _, p := range spec.Pods {
		v, s := podElements(p)
		vethElems = append(vethElems, v)
		sourceElems = append(sourceElems, s)
	}
	if err := c.AddSet(veths, vethElems); err != nil {
		return fmt.Errorf("build nftables set %s: %w", setPodVeths, err)
	}
	if err := c.AddSet(sources, sourceElems); err != nil {
		return fmt.Errorf("build nftables set %s: %w", setPodSources, err)
	}
	ch := c.AddChain(&nftables.Chain{Name: ChainPodAntiSpoof, Table: t})
	// A concatenated key lives in 32-bit registers: the 16-byte interface
	// name in 8-11, the source address right after it in 12.
	const regName, regAddr = 8, 12
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: veths.Name, SetID: veths.ID},
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, unix.ETH_P_IP)},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regName},
		&expr.Payload{DestRegister: regAddr, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: regName, SetName: sources.Name, SetID: sources.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	return nil
}

// podAntiSpoofJump sends packets that arrived on a pod veth to
// pod-antispoof. A pod veth's name is "loom" and hex digits: one compare
// lets every other packet (the underlay's, the overlay device's "loom.N")
// go on without a set lookup.
func podAntiSpoofJump() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte(podVethRangeFrom), ToData: []byte(podVethRangeTo)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainPodAntiSpoof},
	}
}

// addPodToHost keeps pods (local or remote) off this node's own services
// (gossip, metrics, anything listening) except ICMP, replies to
// connections the node opened, and the ports the operator allowed.
func addPodToHost(c *nftables.Conn, t *nftables.Table, spec FirewallSpec, overlays *nftables.Set) {
	// The input chain jumps here with packets from the pod network only.
	ch := c.AddChain(&nftables.Chain{Name: ChainPodToHost, Table: t})
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	add := func(e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e}) }
	add(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: overlays.Name, SetID: overlays.ID}, ret)
	add(append(ctEstablishedOrRelated(), ret)...)
	add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}}, ret)
	for _, r := range spec.PodToHost {
		add(append(portMatch(policy.PortRange{Protocol: r.Proto, Port: r.Port}), ret)...)
	}
	add(&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// Dropped returns, per guarding chain, how many packets its drop rules
// have counted since the table was last written.
func (f *NFTables) Dropped() (map[string]uint64, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	f.mu.Lock()
	policyChains, guards6 := f.policyChains, f.spec.guardsIPv6()
	f.mu.Unlock()
	type chainOf struct {
		t    *nftables.Table
		name string
	}
	var chains []chainOf
	if guards6 {
		chains = append(chains, chainOf{loomTable6(), ChainVXLANIngress})
	}
	for _, name := range append([]string{ChainVXLANIngress, ChainPodAntiSpoof, ChainPodToHost}, policyChains...) {
		chains = append(chains, chainOf{loomTable(), name})
	}
	for _, ch := range chains {
		t, name := ch.t, ch.name
		key := name
		if strings.HasPrefix(name, policyIngressPrefix) || strings.HasPrefix(name, policyEgressPrefix) {
			key = ChainPolicy
		}
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			continue // chain not present (feature off) or table gone
		}
		for _, r := range rules {
			hasDrop := false
			var n uint64
			for _, e := range r.Exprs {
				switch x := e.(type) {
				case *expr.Counter:
					n = x.Packets
				case *expr.Verdict:
					hasDrop = x.Kind == expr.VerdictDrop
				}
			}
			if hasDrop {
				out[key] += n
			}
		}
	}
	return out, nil
}

// ctEstablishedOrRelated matches packets of flows conntrack has already
// seen both ways, or that belong to one (replies, ICMP errors).
func ctEstablishedOrRelated() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// matchPrefix matches the IPv4 address at offset (12 source, 16
// destination) against p, or its complement when negate is set.
func matchPrefix(offset uint32, p netip.Prefix, negate bool) []expr.Any {
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	mask := net.CIDRMask(p.Bits(), 32)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}
