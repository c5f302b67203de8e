package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type fixture struct {
	k   *FakeKernel
	wc  *WriteCounter
	dp  *Dataplane
	vx  *VXLAN
	dev string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	k := NewFakeKernel()
	under := k.AddDummy("eth0")
	wc := &WriteCounter{Kernel: k}
	dp, vx := testDataplane(wc, wc, under)
	return &fixture{k: k, wc: wc, dp: dp, vx: vx, dev: "loom.1"}
}

// testDataplane is the tests' VXLAN data plane over underlay: the
// data plane writes through k, its VXLAN device through vxKernel.
func testDataplane(k, vxKernel Kernel, underlay netlink.Link) (*Dataplane, *VXLAN) {
	vx := NewVXLAN(vxKernel, VXLANConfig{Name: "loom.1", VNI: 1, Port: 4789, MTU: 1450, MAC: VTEPMAC("self"),
		UnderlayIndex: underlay.Attrs().Index, Local: netip.MustParseAddr("192.0.2.1")})
	return NewDataplane(DataplaneConfig{Kernel: k, Backend: vx, Cluster: netip.MustParsePrefix("10.244.0.0/16")}), vx
}

func peer(name, underlay, subnet string) Peer {
	return Peer{Name: name, Underlay: netip.MustParseAddr(underlay), VTEPMAC: VTEPMAC(name), Subnet: netip.MustParsePrefix(subnet)}
}

var own = netip.MustParsePrefix("10.244.1.0/24")

// kernelState summarises the fake kernel as comparable strings.
func (f *fixture) kernelState(t *testing.T) (neighs, fdbs, routes map[string]string) {
	t.Helper()
	neighs, fdbs, routes = map[string]string{}, map[string]string{}, map[string]string{}
	for _, n := range f.k.Neighs() {
		if n.Family == unix.AF_BRIDGE {
			fdbs[n.HardwareAddr.String()] = n.IP.String()
		} else {
			neighs[n.IP.String()] = n.HardwareAddr.String()
		}
	}
	for _, r := range f.k.Routes() {
		gw := ""
		if r.Gw != nil {
			gw = r.Gw.String()
		}
		if r.Type == unix.RTN_UNREACHABLE {
			gw = "unreachable"
		}
		routes[r.Dst.String()] = gw
	}
	return
}

func TestApplyProgramsPeersInFullAndIsIdempotent(t *testing.T) {
	f := newFixture(t)
	peers := []Peer{peer("b", "192.0.2.2", "10.244.2.0/24"), peer("c", "192.0.2.3", "10.244.3.0/24")}
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: peers}); err != nil {
		t.Fatal(err)
	}
	dev, err := f.k.LinkByName("loom.1")
	if err != nil {
		t.Fatal("device not created:", err)
	}
	vx := dev.(*netlink.Vxlan)
	if vx.VxlanId != 1 || vx.Port != 4789 || vx.Learning || vx.MTU != 1450 || vx.HardwareAddr.String() != VTEPMAC("self").String() {
		t.Fatalf("device has wrong parameters: %+v", vx)
	}
	addrs, _ := f.k.AddrList(dev, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
		t.Fatalf("device addresses = %v, want only 10.244.1.0/32", addrs)
	}
	neighs, fdbs, routes := f.kernelState(t)
	wantNeigh := map[string]string{"10.244.2.0": VTEPMAC("b").String(), "10.244.3.0": VTEPMAC("c").String()}
	wantFDB := map[string]string{VTEPMAC("b").String(): "192.0.2.2", VTEPMAC("c").String(): "192.0.2.3"}
	wantRoutes := map[string]string{"10.244.2.0/24": "10.244.2.0", "10.244.3.0/24": "10.244.3.0", "10.244.1.0/24": "unreachable"}
	assertMap(t, "neighbours", neighs, wantNeigh)
	assertMap(t, "fdb", fdbs, wantFDB)
	assertMap(t, "routes", routes, wantRoutes)

	before := f.wc.Writes()
	res, err := f.dp.Apply(Desired{Subnet: own, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.wc.Writes() - before; got != 0 || res.Writes != 0 {
		t.Fatalf("no-op resync made %d kernel writes (result says %d), want 0", got, res.Writes)
	}
}

func TestApplyRemovesDeadPeerAndRepairsChangedOne(t *testing.T) {
	f := newFixture(t)
	b, c := peer("b", "192.0.2.2", "10.244.2.0/24"), peer("c", "192.0.2.3", "10.244.3.0/24")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b, c}}); err != nil {
		t.Fatal(err)
	}
	// c dies; b moves to a new underlay address (a reboot with a new DHCP lease).
	b.Underlay = netip.MustParseAddr("192.0.2.20")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	neighs, fdbs, routes := f.kernelState(t)
	assertMap(t, "neighbours", neighs, map[string]string{"10.244.2.0": VTEPMAC("b").String()})
	assertMap(t, "fdb", fdbs, map[string]string{VTEPMAC("b").String(): "192.0.2.20"})
	assertMap(t, "routes", routes, map[string]string{"10.244.2.0/24": "10.244.2.0", "10.244.1.0/24": "unreachable"})
}

// TestApplyFollowsRouteMTU: a peer's route carries the MTU asked for, and
// a change of it (the peer's underlay MTU changed) is written again.
func TestApplyFollowsRouteMTU(t *testing.T) {
	f := newFixture(t)
	b := peer("b", "192.0.2.2", "10.244.2.0/24")
	routeMTU := func() int {
		for _, r := range f.k.Routes() {
			if r.Dst.String() == "10.244.2.0/24" {
				return r.MTU
			}
		}
		t.Fatal("no route to b")
		return 0
	}
	for _, want := range []int{0, 1400, 0} {
		b.RouteMTU = want
		if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
			t.Fatal(err)
		}
		if got := routeMTU(); got != want {
			t.Fatalf("route MTU %d, want %d", got, want)
		}
	}
}

// A peer dies while the others stay as they are: nothing to add, so the
// stale pass works from what the add pass listed, and must still remove
// the dead peer's entries.
func TestApplyRemovesDeadPeerWhenNothingIsAdded(t *testing.T) {
	f := newFixture(t)
	b, c := peer("b", "192.0.2.2", "10.244.2.0/24"), peer("c", "192.0.2.3", "10.244.3.0/24")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b, c}}); err != nil {
		t.Fatal(err)
	}
	res, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Added["neigh+fdb"] != 0 || res.Removed["neigh+fdb"] != 2 {
		t.Fatalf("added %d and removed %d neighbour/fdb entries, want 0 and 2", res.Added["neigh+fdb"], res.Removed["neigh+fdb"])
	}
	neighs, fdbs, _ := f.kernelState(t)
	assertMap(t, "neighbours", neighs, map[string]string{"10.244.2.0": VTEPMAC("b").String()})
	assertMap(t, "fdb", fdbs, map[string]string{VTEPMAC("b").String(): "192.0.2.2"})
}

func TestApplyRemovesPlantedStaleEntriesButNotForeignRoutes(t *testing.T) {
	f := newFixture(t)
	b := peer("b", "192.0.2.2", "10.244.2.0/24")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	dev, _ := f.k.LinkByName("loom.1")
	ghost := peer("ghost", "192.0.2.99", "10.244.99.0/24")
	f.k.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: net.ParseIP("10.244.99.0"), HardwareAddr: ghost.VTEPMAC})
	f.k.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, IP: net.ParseIP("192.0.2.99"), HardwareAddr: ghost.VTEPMAC})
	f.k.RouteReplace(&netlink.Route{LinkIndex: dev.Attrs().Index, Dst: ipNetOf(ghost.Subnet), Gw: net.ParseIP("10.244.99.0"), Flags: int(netlink.FLAG_ONLINK)})
	// A route someone else made on another device, in the cluster range.
	eth0, _ := f.k.LinkByName("eth0")
	f.k.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNetOf(netip.MustParsePrefix("10.244.200.0/24")), Gw: net.ParseIP("192.0.2.254")})

	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	neighs, fdbs, routes := f.kernelState(t)
	assertMap(t, "neighbours", neighs, map[string]string{"10.244.2.0": VTEPMAC("b").String()})
	assertMap(t, "fdb", fdbs, map[string]string{VTEPMAC("b").String(): "192.0.2.2"})
	assertMap(t, "routes", routes, map[string]string{"10.244.2.0/24": "10.244.2.0", "10.244.1.0/24": "unreachable", "10.244.200.0/24": "192.0.2.254"})
}

func TestApplyRecreatesDeletedOrMisconfiguredDevice(t *testing.T) {
	f := newFixture(t)
	b := peer("b", "192.0.2.2", "10.244.2.0/24")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	dev, _ := f.k.LinkByName("loom.1")
	f.k.LinkDel(dev)
	res, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.DeviceChanged {
		t.Fatal("deleted device not reported as changed")
	}
	neighs, fdbs, routes := f.kernelState(t)
	if len(neighs) != 1 || len(fdbs) != 1 || routes["10.244.2.0/24"] != "10.244.2.0" {
		t.Fatalf("entries not restored after device recreation: %v %v %v", neighs, fdbs, routes)
	}
	// Same name, wrong VNI: must be replaced, not reused.
	dev, _ = f.k.LinkByName("loom.1")
	f.k.LinkDel(dev)
	f.k.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "loom.1"}, VxlanId: 42})
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	dev, _ = f.k.LinkByName("loom.1")
	if dev.(*netlink.Vxlan).VxlanId != 1 {
		t.Fatalf("misconfigured device reused: vni %d", dev.(*netlink.Vxlan).VxlanId)
	}
}

// Another overlay's device on Loom's VNI and port makes the kernel refuse
// Loom's with "file exists"; the error must name the device in the way.
func TestApplyNamesForeignDeviceOnSameVNIAndPort(t *testing.T) {
	f := newFixture(t)
	f.k.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, Port: 4789})
	_, err := f.dp.Apply(Desired{Subnet: own})
	if err == nil || !strings.Contains(err.Error(), "VXLAN device flannel.1 already uses VNI 1 on UDP port 4789") {
		t.Fatalf("want an error naming flannel.1, got %v", err)
	}
	dev, _ := f.k.LinkByName("flannel.1")
	f.k.LinkDel(dev)
	if _, err := f.dp.Apply(Desired{Subnet: own}); err != nil {
		t.Fatalf("with the foreign device gone: %v", err)
	}
}

// noVXLANKernel refuses VXLAN devices as a kernel without the driver does.
type noVXLANKernel struct{ *FakeKernel }

func (k noVXLANKernel) LinkAdd(l netlink.Link) error {
	if l.Type() == "vxlan" {
		return unix.EOPNOTSUPP
	}
	return k.FakeKernel.LinkAdd(l)
}

func TestApplySaysTheKernelLacksVXLAN(t *testing.T) {
	k := noVXLANKernel{NewFakeKernel()}
	dp, _ := testDataplane(k, k, k.AddDummy("eth0"))
	if _, err := dp.Apply(Desired{Subnet: own}); err == nil || !strings.Contains(err.Error(), "no VXLAN driver") {
		t.Fatalf("want an error saying the kernel has no VXLAN driver, got %v", err)
	}
}

func TestApplyPodRoutes(t *testing.T) {
	f := newFixture(t)
	hostIf := api.HostVethName("c1", "eth0")
	f.k.AddDummy(hostIf)
	pods := []PodRoute{{IP: netip.MustParseAddr("10.244.1.5"), HostIf: hostIf}, {IP: netip.MustParseAddr("10.244.1.6"), HostIf: "gone"}}
	if _, err := f.dp.Apply(Desired{Subnet: own, Pods: pods}); err != nil {
		t.Fatal(err)
	}
	_, _, routes := f.kernelState(t)
	if _, ok := routes["10.244.1.5/32"]; !ok {
		t.Fatalf("no route to attached pod: %v", routes)
	}
	if _, ok := routes["10.244.1.6/32"]; ok {
		t.Fatal("route to a pod whose veth is gone")
	}
	l, _ := f.k.LinkByName(hostIf)
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("host veth not up")
	}
	addrs, _ := f.k.AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.IP.String() != PodGateway.String() {
		t.Fatalf("host veth addresses = %v, want the gateway", addrs)
	}
	// The pod goes away: its route goes with it.
	if _, err := f.dp.Apply(Desired{Subnet: own}); err != nil {
		t.Fatal(err)
	}
	if _, _, routes = f.kernelState(t); len(routes) != 1 {
		t.Fatalf("routes after pod removal = %v, want only the unreachable route", routes)
	}
}

func TestHostVethNameAndVTEPMAC(t *testing.T) {
	n := api.HostVethName("0123456789abcdef0123456789abcdef", "eth0")
	if len(n) > 15 || n != api.HostVethName("0123456789abcdef0123456789abcdef", "eth0") || n == api.HostVethName("0123456789abcdef0123456789abcdef", "eth1") {
		t.Fatalf("host veth name %q not short, stable and unique", n)
	}
	m := VTEPMAC("node1")
	if m[0]&1 != 0 || m[0]&2 == 0 || m.String() != VTEPMAC("node1").String() || m.String() == VTEPMAC("node2").String() {
		t.Fatalf("VTEP MAC %s not unicast, local, stable and unique", m)
	}
}

func assertMap(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
}

func TestAdoptKeepsExistingPeersUntilMembershipSettles(t *testing.T) {
	f := newFixture(t)
	b := peer("b", "192.0.2.2", "10.244.2.0/24")
	if _, err := f.dp.Apply(Desired{Subnet: own, Peers: []Peer{b}}); err != nil {
		t.Fatal(err)
	}
	// A restarted agent knows no peers yet: adopting keeps b's entries.
	if _, err := f.dp.Apply(Desired{Subnet: own, Adopt: true}); err != nil {
		t.Fatal(err)
	}
	neighs, fdbs, routes := f.kernelState(t)
	if len(neighs) != 1 || len(fdbs) != 1 || routes["10.244.2.0/24"] == "" {
		t.Fatalf("adopting removed entries: %v %v %v", neighs, fdbs, routes)
	}
	// Once settled, b is really gone.
	if _, err := f.dp.Apply(Desired{Subnet: own}); err != nil {
		t.Fatal(err)
	}
	if neighs, fdbs, routes = f.kernelState(t); len(neighs)+len(fdbs) != 0 || len(routes) != 1 {
		t.Fatalf("after settling: %v %v %v", neighs, fdbs, routes)
	}
}

// specsFirewall records the specs it is asked to apply, and to keep.
type specsFirewall struct{ specs, kept []FirewallSpec }

func (f *specsFirewall) Apply(spec FirewallSpec) (bool, error) {
	f.specs = append(f.specs, spec)
	return true, nil
}
func (f *specsFirewall) AddPod(PodRoute) error                      { return nil }
func (f *specsFirewall) RemovePod(string) error                     { return nil }
func (f *specsFirewall) ApplyPolicy(*policy.Compiled) (bool, error) { return false, nil }
func (f *specsFirewall) Keep(spec FirewallSpec) (bool, error) {
	f.kept = append(f.kept, spec)
	return true, nil
}

// TestKeepFirewallProgramsAllButTheFirewall: while the policies are not
// known, peers are programmed and the firewall is kept (with the member
// nodes); then it is written.
func TestKeepFirewallProgramsAllButTheFirewall(t *testing.T) {
	k := NewFakeKernel()
	under := k.AddDummy("eth0")
	fw := &specsFirewall{}
	vx := NewVXLAN(k, VXLANConfig{Name: "loom.1", VNI: 1, Port: 4789, MTU: 1450, MAC: VTEPMAC("self"),
		UnderlayIndex: under.Attrs().Index, Local: netip.MustParseAddr("192.0.2.1")})
	dp := NewDataplane(DataplaneConfig{Kernel: k, Backend: vx, Firewall: fw, Cluster: netip.MustParsePrefix("10.244.0.0/16")})
	b := peer("b", "192.0.2.2", "10.244.2.0/24")
	d := Desired{Subnet: own, Peers: []Peer{b}, NodeAddrs: []netip.Addr{b.Underlay}, KeepFirewall: true}
	if _, err := dp.Apply(d); err != nil {
		t.Fatal(err)
	}
	if len(fw.specs) != 0 || len(fw.kept) != 1 || !slices.Equal(fw.kept[0].NodeAddrs, d.NodeAddrs) {
		t.Fatalf("firewall written while kept: %+v, kept %+v; want it kept with b's address", fw.specs, fw.kept)
	}
	if !slices.ContainsFunc(k.Routes(), func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == "10.244.2.0/24" }) {
		t.Fatalf("b's subnet not routed while the firewall is kept: %v", k.Routes())
	}
	d.KeepFirewall = false
	if _, err := dp.Apply(d); err != nil {
		t.Fatal(err)
	}
	if len(fw.specs) != 1 || !slices.Equal(fw.specs[0].NodeAddrs, d.NodeAddrs) {
		t.Fatalf("firewall specs %+v, want one with b's address", fw.specs)
	}
}

func TestIsPodVethName(t *testing.T) {
	if !IsPodVethName(api.HostVethName("c", "eth0")) {
		t.Fatal("HostVethName output not recognised")
	}
	for _, n := range []string{"loom.1", "eth0", "loomXXXXXXXXXXX", "loom0123456789", "veth0123456789a"} {
		if IsPodVethName(n) {
			t.Errorf("%q taken for a pod veth", n)
		}
	}
}

func TestDirectRoutingForOnLinkPeers(t *testing.T) {
	f := newFixture(t)
	eth0, _ := f.k.LinkByName("eth0")
	f.k.AddrReplace(eth0, &netlink.Addr{IPNet: ipNetOf(netip.MustParsePrefix("192.0.2.1/24"))})
	dp := NewDataplane(DataplaneConfig{Kernel: f.wc, Backend: NewDirect(f.wc, f.vx, "eth0"), Cluster: netip.MustParsePrefix("10.244.0.0/16")})
	near, far := peer("near", "192.0.2.2", "10.244.2.0/24"), peer("far", "198.51.100.3", "10.244.3.0/24")
	if _, err := dp.Apply(Desired{Subnet: own, Peers: []Peer{near, far}}); err != nil {
		t.Fatal(err)
	}
	neighs, fdbs, routes := f.kernelState(t)
	if routes["10.244.2.0/24"] != "192.0.2.2" {
		t.Fatalf("on-link peer not routed directly: %v", routes)
	}
	if routes["10.244.3.0/24"] != "10.244.3.0" {
		t.Fatalf("off-link peer not routed through the tunnel: %v", routes)
	}
	if len(neighs) != 1 || len(fdbs) != 1 || fdbs[VTEPMAC("far").String()] != "198.51.100.3" {
		t.Fatalf("tunnel entries: %v %v, want only the off-link peer's", neighs, fdbs)
	}
	// A no-op resync writes nothing.
	before := f.wc.Writes()
	if res, err := dp.Apply(Desired{Subnet: own, Peers: []Peer{near, far}}); err != nil || f.wc.Writes() != before {
		t.Fatalf("no-op resync with direct routing wrote %d (%v, %+v)", f.wc.Writes()-before, err, res)
	}
}

// TestDetachPod: the pod is cut off at once (veth down, route gone), no
// reconcile revives it while it waits for deletion, and WaitDetached
// returns once it is deleted.
func TestDetachPod(t *testing.T) {
	f := newFixture(t)
	hostIf := api.HostVethName("c1", "eth0")
	f.k.AddDummy(hostIf)
	pods := []PodRoute{{IP: netip.MustParseAddr("10.244.1.5"), HostIf: hostIf}}
	if _, err := f.dp.Apply(Desired{Subnet: own, Pods: pods}); err != nil {
		t.Fatal(err)
	}
	if err := f.dp.DetachPod(hostIf, "/run/netns/p"); err != nil {
		t.Fatal(err)
	}
	l, err := f.k.LinkByName(hostIf)
	if err != nil {
		t.Fatalf("veth deleted before the netns removal had its chance: %v", err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		t.Fatal("detached veth still up")
	}
	if _, _, routes := f.kernelState(t); len(routes) != 1 {
		t.Fatalf("routes after detach = %v, want only the unreachable route", routes)
	}
	// A reconcile that still lists the pod (it read allocations before the
	// release) must not bring it back.
	if _, err := f.dp.Apply(Desired{Subnet: own, Pods: pods}); err != nil {
		t.Fatal(err)
	}
	if l, _ := f.k.LinkByName(hostIf); l.Attrs().Flags&net.FlagUp != 0 {
		t.Fatal("a reconcile revived the detached veth")
	}
	if !f.dp.Detaching(hostIf) {
		t.Fatal("veth not reported as detaching")
	}
	f.dp.WaitDetached("", "/run/netns/p") // an ADD into the same netns
	if _, err := f.k.LinkByName(hostIf); err == nil {
		t.Fatal("veth still there after WaitDetached")
	}
	if f.dp.Detaching(hostIf) {
		t.Fatal("veth still reported as detaching")
	}
}

// addrDumpCounter counts address listings, each a dump of every link's
// addresses in the real kernel.
// addrDumpCounter counts address listings and link lookups by name.
type addrDumpCounter struct {
	Kernel
	dumps, lookups int
}

func (c *addrDumpCounter) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	c.dumps++
	return c.Kernel.AddrList(l, family)
}

func (c *addrDumpCounter) LinkByName(name string) (netlink.Link, error) {
	c.lookups++
	return c.Kernel.LinkByName(name)
}

// A reconcile lists the node's addresses as often with 200 pods as with
// one: it listed one veth's per pod, and each such listing dumps all of
// them, so a reconcile (one per CNI ADD) cost the square of the pods. It
// still sees which veths have the gateway: the second, no-op reconcile
// writes nothing. Nor does it look each pod's veth up on its own: a
// request each cost more than one dump of the node's links.
func TestReconcileListsAddressesOncePerRun(t *testing.T) {
	dumps, lookups := map[int]int{}, map[int]int{}
	for _, count := range []int{1, 200} {
		k := NewFakeKernel()
		under := k.AddDummy("eth0")
		c := &addrDumpCounter{Kernel: k}
		wc := &WriteCounter{Kernel: c}
		dp, _ := testDataplane(wc, wc, under)
		var pods []PodRoute
		for i := range count {
			hostIf := api.HostVethName(fmt.Sprintf("c%d", i), "eth0")
			k.AddDummy(hostIf)
			pods = append(pods, PodRoute{IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}), HostIf: hostIf})
		}
		if _, err := dp.Apply(Desired{Subnet: own, Pods: pods}); err != nil {
			t.Fatal(err)
		}
		c.dumps, c.lookups = 0, 0
		res, err := dp.Apply(Desired{Subnet: own, Pods: pods})
		if err != nil {
			t.Fatal(err)
		}
		if res.Writes != 0 {
			t.Fatalf("%d pods: the no-op reconcile wrote %d times", count, res.Writes)
		}
		dumps[count], lookups[count] = c.dumps, c.lookups
	}
	if dumps[200] != dumps[1] {
		t.Fatalf("a reconcile listed addresses %d times with 200 pods, %d with one", dumps[200], dumps[1])
	}
	if lookups[200] > lookups[1] {
		t.Fatalf("a reconcile looked links up by name %d times with 200 pods, %d with one", lookups[200], lookups[1])
	}
}

// linkListFailing fails every link listing.
type linkListFailing struct{ Kernel }

func (linkListFailing) LinkList() ([]netlink.Link, error) { return nil, unix.ENOBUFS }

// A reconcile that cannot dump the node's links looks the pods' veths up
// one by one: every pod keeps its route.
func TestReconcileWithoutLinkListFindsPods(t *testing.T) {
	k := NewFakeKernel()
	under := k.AddDummy("eth0")
	dp, _ := testDataplane(&WriteCounter{Kernel: linkListFailing{k}}, &WriteCounter{Kernel: k}, under)
	var pods []PodRoute
	for i := range 2 * podLinksDumpedFrom {
		hostIf := api.HostVethName(fmt.Sprintf("c%d", i), "eth0")
		k.AddDummy(hostIf)
		pods = append(pods, PodRoute{IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}), HostIf: hostIf})
	}
	if _, err := dp.Apply(Desired{Subnet: own, Pods: pods}); err != nil {
		t.Fatal(err)
	}
	routes, err := k.RouteList(netlink.FAMILY_V4, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	to := map[string]bool{}
	for _, r := range routes {
		if r.Dst != nil {
			to[r.Dst.String()] = true
		}
	}
	for _, p := range pods {
		if !to[netip.PrefixFrom(p.IP, 32).String()] {
			t.Errorf("no route to pod %s through %s", p.IP, p.HostIf)
		}
	}
}

// addrListFailing fails every address listing.
type addrListFailing struct{ Kernel }

func (addrListFailing) AddrList(netlink.Link, int) ([]netlink.Addr, error) {
	return nil, unix.ENOBUFS
}

// A reconcile that cannot list the node's addresses says so, and keeps
// the pods' routes and gateways: leaving the pods out would remove their
// routes.
func TestReconcileWithoutAddressListKeepsPods(t *testing.T) {
	k := NewFakeKernel()
	under := k.AddDummy("eth0")
	dp, _ := testDataplane(&WriteCounter{Kernel: addrListFailing{k}}, &WriteCounter{Kernel: k}, under)
	hostIf := api.HostVethName("c1", "eth0")
	k.AddDummy(hostIf)
	pods := []PodRoute{{IP: netip.MustParseAddr("10.244.1.5"), HostIf: hostIf}}
	if _, err := dp.Apply(Desired{Subnet: own, Pods: pods}); err == nil || !strings.Contains(err.Error(), "list addresses") {
		t.Fatalf("Apply = %v, want the failed address listing named", err)
	}
	found := false
	for _, r := range k.Routes() {
		found = found || r.Dst.String() == "10.244.1.5/32"
	}
	l, _ := k.LinkByName(hostIf)
	addrs, _ := k.AddrList(l, netlink.FAMILY_V4)
	if !found || len(addrs) != 1 {
		t.Fatalf("route to the pod kept: %v; gateway addresses on its veth: %v", found, addrs)
	}
}
