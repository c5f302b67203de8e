// Package agent is loomd: it wires gossip, ipam and the overlay together,
// serves the local API, and owns the agent's lifecycle.
package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/internal/logging"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Version is the agent's version, set at build time with -ldflags.
var Version = "dev"

// Config is loomd's configuration. Every field has a flag of the same
// name (see cmd/loomd) and a LOOM_* environment variable.
type Config struct {
	// NodeName is the node's unique name in the fabric. Default: hostname.
	NodeName string
	// AdvertiseAddr is the underlay address peers reach this node at, IPv4
	// or IPv6 (all nodes of a fabric use one family). Default: the first
	// IPv4 address of Iface, else its first global IPv6 address.
	AdvertiseAddr string
	// Iface is the underlay interface. Default: the default route's.
	Iface string
	// Join lists peers ("host" or "host:port") to join; empty bootstraps a
	// new fabric.
	Join []string
	// GossipPort is the memberlist TCP/UDP port, the same on every node.
	GossipPort int
	// GossipProfile is "lan" or "wan" (memberlist's timing profiles).
	GossipProfile string
	// ClusterCIDR is the pod address space of the whole fabric.
	ClusterCIDR string
	// SubnetPrefix is the prefix length of each node's pod subnet.
	SubnetPrefix int
	// VNI is the VXLAN network identifier.
	VNI int
	// VXLANPort is the VXLAN UDP port.
	VXLANPort int
	// Backend is the data plane between nodes: vxlan or wireguard.
	Backend string
	// WireGuardPort is the WireGuard UDP port, the same on every node.
	WireGuardPort int
	// WireGuardKeepalive keeps NAT mappings to peers open; 0 disables.
	WireGuardKeepalive time.Duration
	// MTU is the overlay and pod MTU. 0: underlay MTU - the backend's
	// overhead (VXLAN 50 over IPv4, 70 over IPv6; WireGuard 80).
	MTU int
	// GossipKeyFile holds base64 gossip keys, one per line, first primary.
	GossipKeyFile string
	// InsecureGossip is the explicit opt-out of gossip encryption.
	InsecureGossip bool
	// StateDir holds the crash-safe state (own lease, pod allocations).
	StateDir string
	// Socket is the local API's unix socket.
	Socket string
	// CNIConfDir is where the conflist is written once the node can serve.
	CNIConfDir string
	// UnderlayCIDRs restricts the underlay addresses peers may advertise;
	// empty allows any.
	UnderlayCIDRs []string
	// DirectRouting routes peers on the same L2 segment (on-link on Iface)
	// via their underlay address without encapsulation.
	DirectRouting bool
	// PodAntiSpoof selects how pods are kept to their own source address:
	// nftables (default) or rp_filter.
	PodAntiSpoof string
	// Masquerade gives pods' traffic to anything outside the cluster CIDR
	// and the member nodes the node's address. Off, pods keep their own,
	// for underlays that route the pod network.
	Masquerade bool
	// AllowPodToHost lists what pods may reach on their node itself, as
	// tcp/PORT or udp/PORT, besides ICMP; "all" turns the filter off.
	AllowPodToHost []string
	// PolicySource is where network policies come from: files, kubernetes,
	// none, or auto (files when PolicyDir is set, else none).
	PolicySource string
	// Kubeconfig is the file the Kubernetes policy source reaches the API
	// server with; empty: the pod's service account (in cluster).
	Kubeconfig string
	// PolicyDir holds NetworkPolicy and Namespace YAML for the files source.
	PolicyDir string
	// CNIChain lists plugins chained after loom in the conflist, e.g.
	// portmap and bandwidth from the CNI reference plugins.
	CNIChain []string
	// MetricsAddr serves /metrics, /healthz and /readyz; empty disables.
	MetricsAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is json or console.
	LogFormat string
	// DeadNodeGrace is how long after a peer is declared dead its routes are
	// withdrawn; a restart within it keeps traffic to its pods flowing.
	DeadNodeGrace time.Duration
	// LeaseTTL is how long a dead node's subnet stays reserved for it.
	LeaseTTL time.Duration
	// ResyncInterval is how often the kernel is re-read and drift repaired.
	ResyncInterval time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:       host,
		GossipPort:     7946,
		GossipProfile:  "lan",
		ClusterCIDR:    "10.244.0.0/16",
		SubnetPrefix:   24,
		VNI:            1,
		VXLANPort:      4789,
		Backend:        BackendVXLAN,
		WireGuardPort:  51820,
		StateDir:       "/var/lib/loom",
		Socket:         "/run/loom/loom.sock",
		CNIConfDir:     "/etc/cni/net.d",
		MetricsAddr:    "127.0.0.1:9641",
		LogLevel:       "info",
		LogFormat:      "json",
		Masquerade:     true,
		DeadNodeGrace:  10 * time.Second,
		LeaseTTL:       24 * time.Hour,
		ResyncInterval: 30 * time.Second,
	}
}

// FlagError is a configuration error attributable to one flag.
type FlagError struct {
	Flag string
	Err  error
}

func (e *FlagError) Error() string { return fmt.Sprintf("invalid --%s: %v", e.Flag, e.Err) }
func (e *FlagError) Unwrap() error { return e.Err }

func flagErr(flag string, format string, a ...any) error {
	return &FlagError{Flag: flag, Err: fmt.Errorf(format, a...)}
}

var pluginNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$`)

// resolved is the validated, derived configuration the agent runs with.
type resolved struct {
	Config
	space     ipam.SubnetSpace
	cluster   netip.Prefix
	underlay  netlink.Link
	advertise netip.Addr
	// source is the address the tunnel sends from: advertise when this
	// node owns it, else (a NAT's public address) the first of --iface.
	source    netip.Addr
	mtu       int
	keys      [][]byte
	podToHost []overlay.PortRule
	underlays []netip.Prefix
	// policySource is PolicySource with auto resolved.
	policySource string
}

// Resolve validates cfg and derives what the agent needs (underlay link,
// advertise address, MTU, keys). Every error names the offending flag.
func Resolve(cfg Config, k overlay.Kernel) (*resolved, error) {
	r, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	if err := r.checkFiles(); err != nil {
		return nil, err
	}
	if r.keys, err = loadKeys(cfg); err != nil {
		return nil, err
	}
	if err := r.resolveUnderlay(k); err != nil {
		return nil, err
	}
	if err := r.joinSameFamily(); err != nil {
		return nil, err
	}
	return r, nil
}

// Validate checks cfg's values on their own, without reading a file or
// the host's interfaces: what --print-config vouches for. Every error
// names the offending flag.
func Validate(cfg Config) error {
	_, err := validate(cfg)
	return err
}

// validate is Resolve's first half: the checks that need nothing but cfg.
func validate(cfg Config) (*resolved, error) {
	r := &resolved{Config: cfg}
	if !nodeNameRE.MatchString(cfg.NodeName) {
		return nil, flagErr("node-name", "%q: must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", cfg.NodeName)
	}
	cluster, err := netip.ParsePrefix(cfg.ClusterCIDR)
	if err != nil {
		return nil, flagErr("cluster-cidr", "%q is not a CIDR: %v", cfg.ClusterCIDR, err)
	}
	if !cluster.Addr().Is4() {
		return nil, flagErr("cluster-cidr", "%s: pods are IPv4 only (the underlay between nodes may be IPv6: see --advertise-addr)", cluster)
	}
	if cluster.Masked() != cluster {
		return nil, flagErr("cluster-cidr", "%s is not a network address (did you mean %s?)", cluster, cluster.Masked())
	}
	r.cluster = cluster
	if cfg.SubnetPrefix <= cluster.Bits() || cfg.SubnetPrefix > 30 {
		return nil, flagErr("subnet-prefix", "/%d must be longer than the cluster prefix /%d and at most /30", cfg.SubnetPrefix, cluster.Bits())
	}
	if r.space, err = ipam.NewSubnetSpace(cluster, cfg.SubnetPrefix); err != nil {
		return nil, flagErr("subnet-prefix", "%v", err)
	}
	if cfg.VNI < 1 || cfg.VNI > 1<<24-1 {
		return nil, flagErr("vni", "%d is outside 1..16777215", cfg.VNI)
	}
	for _, p := range []struct {
		flag string
		v    int
	}{{"gossip-port", cfg.GossipPort}, {"vxlan-port", cfg.VXLANPort}, {"wireguard-port", cfg.WireGuardPort}} {
		if p.v < 1 || p.v > 65535 {
			return nil, flagErr(p.flag, "%d is not a port (1..65535)", p.v)
		}
	}
	if cfg.GossipProfile != "lan" && cfg.GossipProfile != "wan" {
		return nil, flagErr("gossip-profile", "%q: want lan or wan", cfg.GossipProfile)
	}
	if _, err := logging.ParseLevel(cfg.LogLevel); err != nil {
		return nil, flagErr("log-level", "%v", err)
	}
	if err := logging.CheckFormat(cfg.LogFormat); err != nil {
		return nil, flagErr("log-format", "%v", err)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		min  time.Duration
	}{{"dead-node-grace", cfg.DeadNodeGrace, 0}, {"lease-ttl", cfg.LeaseTTL, time.Second}, {"resync-interval", cfg.ResyncInterval, time.Second}} {
		if d.v < d.min {
			return nil, flagErr(d.flag, "%s is below the minimum %s", d.v, d.min)
		}
	}
	for _, p := range []struct{ flag, v string }{{"state-dir", cfg.StateDir}, {"socket", cfg.Socket}, {"cni-conf-dir", cfg.CNIConfDir}} {
		if p.v == "" {
			return nil, flagErr(p.flag, "must not be empty")
		}
	}
	if len(cfg.Socket) > maxSocketPath {
		// The kernel's own refusal reads "bind: invalid argument".
		return nil, flagErr("socket", "%q is %d bytes; a unix socket path holds at most %d", cfg.Socket, len(cfg.Socket), maxSocketPath)
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, flagErr("metrics-addr", "%q: %v", cfg.MetricsAddr, err)
		}
	}
	for _, c := range cfg.UnderlayCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Masked() != p {
			return nil, flagErr("underlay-cidrs", "%q is not a network in CIDR form", c)
		}
		r.underlays = append(r.underlays, p)
	}
	switch cfg.Backend {
	case BackendVXLAN:
	case BackendWireGuard:
		if cfg.DirectRouting {
			return nil, flagErr("direct-routing", "is for the vxlan backend; --backend wireguard encrypts every peer")
		}
	default:
		return nil, flagErr("backend", "%q: want vxlan or wireguard", cfg.Backend)
	}
	if cfg.WireGuardKeepalive < 0 || cfg.WireGuardKeepalive > 65535*time.Second {
		return nil, flagErr("wireguard-keepalive", "%s is outside 0..65535s", cfg.WireGuardKeepalive)
	}
	switch cfg.PodAntiSpoof {
	case "", overlay.AntiSpoofNFTables, overlay.AntiSpoofRPFilter:
	default:
		return nil, flagErr("pod-antispoof", "%q: want nftables or rp_filter", cfg.PodAntiSpoof)
	}
	r.podToHost = []overlay.PortRule{}
	for _, p := range cfg.AllowPodToHost {
		if p == "all" {
			r.podToHost = nil
			break
		}
		pr, err := overlay.ParsePortRule(p)
		if err != nil {
			return nil, flagErr("allow-pod-to-host", "%v", err)
		}
		r.podToHost = append(r.podToHost, pr)
	}
	switch r.policySource = cfg.PolicySource; cfg.PolicySource {
	case "", "auto":
		switch {
		case os.Getenv("KUBERNETES_SERVICE_HOST") != "" || cfg.Kubeconfig != "":
			r.policySource = PolicySourceKubernetes
		case cfg.PolicyDir != "":
			r.policySource = PolicySourceFiles
		default:
			r.policySource = PolicySourceNone
		}
	case PolicySourceKubernetes:
	case PolicySourceFiles:
		if cfg.PolicyDir == "" {
			return nil, flagErr("policy-dir", "must be set with --policy-source files")
		}
	case PolicySourceNone:
	default:
		return nil, flagErr("policy-source", "%q: want kubernetes, files, none or auto", cfg.PolicySource)
	}
	if cfg.Kubeconfig != "" && r.policySource != PolicySourceKubernetes {
		return nil, flagErr("kubeconfig", "is for --policy-source kubernetes, not %s", r.policySource)
	}
	for _, c := range cfg.CNIChain {
		if !pluginNameRE.MatchString(c) || c == "loom" {
			return nil, flagErr("cni-chain", "%q is not a plugin type to chain after loom", c)
		}
	}
	for _, j := range cfg.Join {
		if strings.TrimSpace(j) == "" {
			return nil, flagErr("join", "empty address in list")
		}
	}
	if err := keysChosen(cfg); err != nil {
		return nil, err
	}
	if cfg.AdvertiseAddr != "" {
		if r.advertise, err = parseAdvertise(cfg.AdvertiseAddr); err != nil {
			return nil, err
		}
	}
	if cfg.MTU != 0 {
		if err := checkMTU(cfg.MTU); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// checkFiles checks that the files the configuration names for the policy
// source are there.
func (r *resolved) checkFiles() error {
	if r.Kubeconfig != "" {
		if st, err := os.Stat(r.Kubeconfig); err != nil || st.IsDir() {
			return flagErr("kubeconfig", "%q is not a readable file", r.Kubeconfig)
		}
	}
	if r.policySource == PolicySourceFiles {
		if st, err := os.Stat(r.PolicyDir); err != nil || !st.IsDir() {
			return flagErr("policy-dir", "%q is not a readable directory", r.PolicyDir)
		}
	}
	return nil
}

// parseAdvertise parses --advertise-addr and refuses an address peers
// cannot reach.
func parseAdvertise(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, flagErr("advertise-addr", "%q is not an IP address (a link-local one with a zone cannot be reached across a fabric)", s)
	}
	a = a.Unmap()
	if !reachableUnderlay(a) {
		return netip.Addr{}, flagErr("advertise-addr", "%s is a loopback, link-local, multicast or unspecified address: peers cannot reach it", a)
	}
	return a, nil
}

// checkMTU refuses a pod MTU gossip would not carry or that leaves no room
// for the tunnel's headers in an IP packet.
func checkMTU(mtu int) error {
	if mtu < gossip.MinMTU || mtu > 65535-50 {
		return flagErr("mtu", "%d is outside %d..65485", mtu, gossip.MinMTU)
	}
	return nil
}

// joinSameFamily refuses a --join address of the other family than the
// node's underlay: gossip would never reach it, and a node answering there
// would refuse this one. Host names are left to the resolver.
func (r *resolved) joinSameFamily() error {
	for _, j := range r.Join {
		host := strings.TrimSpace(j)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		a, err := netip.ParseAddr(host)
		if a = a.Unmap(); err == nil && a.Is6() != r.advertise.Is6() {
			return flagErr("join", "%s is %s and this node's underlay address %s is %s: every node of a fabric uses one family", j, familyName(a), r.advertise, familyName(r.advertise))
		}
	}
	return nil
}

// defaultRouteIface returns the interface of the IPv4 default route, or
// of the IPv6 one on a host without it. It lists through k, like every
// dump loomd makes, so that one interrupted by a concurrent change is
// retried instead of failing the start.
func defaultRouteIface(k overlay.Kernel) (string, error) {
	var routes []netlink.Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.RouteList(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		routes = append(routes, rs...)
	}
	for _, rt := range routes {
		if rt.Dst != nil && rt.Dst.String() != "0.0.0.0/0" && rt.Dst.String() != "::/0" {
			continue
		}
		links, err := k.LinkList()
		if err != nil {
			return "", fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if l.Attrs().Index == rt.LinkIndex {
				return l.Attrs().Name, nil
			}
		}
		return "", fmt.Errorf("default route's interface %d not found", rt.LinkIndex)
	}
	return "", errors.New("no default route")
}

func (r *resolved) resolveUnderlay(k overlay.Kernel) error {
	if r.Iface == "" {
		name, err := defaultRouteIface(k)
		if err != nil {
			return flagErr("iface", "not set and no default route to pick one from (%v); pass --iface", err)
		}
		r.Iface = name
	}
	l, err := k.LinkByName(r.Iface)
	if err != nil {
		return flagErr("iface", "%q: no such interface", r.Iface)
	}
	r.underlay = l
	addrs, err := k.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return flagErr("iface", "%q: list addresses: %v", r.Iface, err)
	}
	if err := r.clusterClearOf(addrs); err != nil {
		return err
	}
	if r.AdvertiseAddr != "" {
		a := r.advertise // parsed and checked by validate
		// An address the kernel cannot send from would make it drop every
		// tunnel packet; behind a 1:1 NAT the tunnel sends from --iface's
		// own address and the NAT turns it into the advertised one.
		all, err := k.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return flagErr("advertise-addr", "list local addresses: %v", err)
		}
		if slices.ContainsFunc(all, func(ad netlink.Addr) bool { return ipEquals(ad, a) }) {
			r.source = a
		} else if r.source = firstUnderlay(addrs, a.Is6()); !r.source.IsValid() {
			return flagErr("advertise-addr", "%s is not on this node and interface %q has no %s address to send tunnel packets from", a, r.Iface, familyName(a))
		}
	} else {
		// IPv4 when the interface has it (the tunnel costs 20 bytes
		// less), else IPv6: an IPv6-only underlay needs no flag.
		if r.advertise = firstUnderlay(addrs, false); !r.advertise.IsValid() {
			r.advertise = firstUnderlay(addrs, true)
		}
		r.source = r.advertise
		if !r.advertise.IsValid() {
			return flagErr("advertise-addr", "not set and interface %q has no IPv4 or global IPv6 address", r.Iface)
		}
	}
	if !r.underlayAllowed(r.advertise) {
		// Every peer with the same list would refuse this node's record.
		return flagErr("underlay-cidrs", "%v does not hold this node's own underlay address %s: every peer with the same list would refuse this node", r.underlays, r.advertise)
	}
	if r.cluster.Contains(r.advertise) {
		return flagErr("cluster-cidr", "%s contains this node's underlay address %s: peers' pod routes would capture the tunnel's own packets; choose a --cluster-cidr outside the underlay", r.cluster, r.advertise)
	}
	r.mtu = r.MTU
	if r.mtu == 0 {
		r.mtu = l.Attrs().MTU - r.overhead()
	}
	return checkMTU(r.mtu)
}

// Backends.
const (
	BackendVXLAN     = "vxlan"
	BackendWireGuard = "wireguard"
)

// clusterClearOf refuses a pod space that overlaps the networks of
// --iface: the routes to peers' pod subnets would take the node's own
// underlay traffic (gossip and the tunnel itself), and the node would cut
// itself off the moment it programmed its first peer. 10.244.0.0/16, the
// default, is a common office or data-centre range too.
func (r *resolved) clusterClearOf(addrs []netlink.Addr) error {
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || !ip.Unmap().Is4() || ad.IPNet == nil {
			continue
		}
		ones, _ := ad.Mask.Size()
		if network := netip.PrefixFrom(ip.Unmap(), ones).Masked(); network.Overlaps(r.cluster) {
			return flagErr("cluster-cidr", "%s overlaps %s, the network of --iface %s: pod routes would take the node's own traffic; choose a --cluster-cidr outside the underlay", r.cluster, network, r.Iface)
		}
	}
	return nil
}

// underlayAllowed reports whether an underlay address is in
// --underlay-cidrs (any is, without them).
func (r *resolved) underlayAllowed(a netip.Addr) bool {
	return len(r.underlays) == 0 || slices.ContainsFunc(r.underlays, func(p netip.Prefix) bool { return p.Contains(a) })
}

// maxSocketPath is the longest path a unix socket address holds: Linux's
// sun_path is 108 bytes with the terminating NUL.
const maxSocketPath = 107

// overhead is what the backend's encapsulation adds to a packet: VXLAN
// 50 bytes over IPv4 (outer Ethernet, IPv4, UDP, VXLAN), 70 over IPv6;
// WireGuard 80, the figure WireGuard recommends so either underlay fits.
func (r *resolved) overhead() int {
	switch {
	case r.Backend == BackendWireGuard:
		return 80
	case r.advertise.Is6():
		return 70
	}
	return 50
}

// keysChosen refuses a configuration with both or neither of a gossip
// key file and the explicit opt-out. Starting with neither is refused:
// silent plaintext gossip would let anyone on the underlay join the fabric.
func keysChosen(cfg Config) error {
	switch {
	case cfg.GossipKeyFile != "" && cfg.InsecureGossip:
		return flagErr("insecure-gossip", "cannot be combined with --gossip-key-file")
	case cfg.GossipKeyFile == "" && !cfg.InsecureGossip:
		return flagErr("gossip-key-file", "not set: gossip is encrypted by default; create a key with 'loomctl keygen > key' and pass --gossip-key-file key, or opt out explicitly with --insecure-gossip")
	}
	return nil
}

// loadKeys reads the gossip keyring file, or returns nil for the explicit
// opt-out; validate has made sure there is exactly one of them.
func loadKeys(cfg Config) ([][]byte, error) {
	if cfg.InsecureGossip {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.GossipKeyFile)
	if err != nil {
		return nil, flagErr("gossip-key-file", "%v", err)
	}
	keys, err := ParseKeys(string(b))
	if err != nil {
		return nil, flagErr("gossip-key-file", "%s: %v", cfg.GossipKeyFile, err)
	}
	return keys, nil
}

// ParseKeys parses base64 gossip keys, one per line; the first is primary.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64: %v", i+1, err)
		}
		if len(k) != 16 && len(k) != 24 && len(k) != 32 {
			return nil, fmt.Errorf("line %d: key is %d bytes, want 32 (or 16/24)", i+1, len(k))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in file")
	}
	return keys, nil
}

// validateRecord vets a peer's gossiped record before anything uses it.
func (r *resolved) validateRecord(rec gossip.NodeRecord) error {
	if !reachableUnderlay(rec.Underlay) {
		return fmt.Errorf("underlay address %s is not a unicast address peers can reach", rec.Underlay)
	}
	if rec.Underlay.Is6() != r.advertise.Is6() {
		// A tunnel has one address family: this node could neither send
		// to the peer nor take its packets.
		return fmt.Errorf("underlay address %s is %s and this node's (%s) is %s: a fabric's underlay is one address family", rec.Underlay, familyName(rec.Underlay), r.advertise, familyName(r.advertise))
	}
	if r.cluster.Contains(rec.Underlay) {
		// The route to some pod subnet would send its tunnel packets into
		// the tunnel.
		return fmt.Errorf("underlay address %s is inside the cluster CIDR %s", rec.Underlay, r.cluster)
	}
	if !r.underlayAllowed(rec.Underlay) {
		return fmt.Errorf("underlay address %s is outside --underlay-cidrs %v", rec.Underlay, r.underlays)
	}
	otherSpace := rec.Cluster.IsValid() && (rec.Cluster != r.cluster || rec.SubnetBits != r.space.Bits)
	if rec.HasSubnet() && !otherSpace {
		if err := r.space.Check(rec.Subnet); err != nil {
			return fmt.Errorf("subnet: %w", err)
		}
	}
	// A node that declares another pod space is kept, so that it shows
	// as refused (desiredState never programs it) rather than vanish.
	return nil
}
