package agent

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
)

func gp(name, underlay, subnet string, state gossip.PeerState, since time.Time) gossip.Peer {
	r := gossip.NodeRecord{Name: name, Underlay: netip.MustParseAddr(underlay), VTEPMAC: overlay.VTEPMAC(name)}
	if subnet != "" {
		r.Subnet = netip.MustParsePrefix(subnet)
	}
	return gossip.Peer{Record: r, State: state, Since: since}
}

func TestDesiredStateFromMembershipLeasesAndPods(t *testing.T) {
	space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	leases := ipam.NewLeaseTable(space)
	now := time.Unix(1_000_000, 0)
	own := netip.MustParsePrefix("10.244.1.0/24")
	// "thief" claims a subnet an older lease holds: it must not be routed.
	leases.Merge(
		ipam.Claim{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Owner: "owner", Epoch: 1, Version: 1, State: ipam.LeaseActive},
		ipam.Claim{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Owner: "thief", Epoch: 5, Version: 1, State: ipam.LeaseActive},
		ipam.Claim{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Owner: "just-died", Epoch: 1, Version: 2, State: ipam.LeaseReserved, Expires: now.Add(time.Hour).Unix()},
		ipam.Claim{Subnet: netip.MustParsePrefix("10.244.5.0/24"), Owner: "long-dead", Epoch: 1, Version: 2, State: ipam.LeaseReserved, Expires: now.Add(time.Hour).Unix()},
		ipam.Claim{Subnet: netip.MustParsePrefix("10.244.10.0/24"), Owner: "removed", Epoch: 1, Version: 3, State: ipam.LeaseReleased},
	)
	peers := []gossip.Peer{
		gp("alive", "192.0.2.2", "10.244.2.0/24", gossip.PeerAlive, now.Add(-time.Hour)),
		gp("suspect", "192.0.2.3", "10.244.3.0/24", gossip.PeerSuspect, now.Add(-time.Second)),
		gp("just-died", "192.0.2.4", "10.244.4.0/24", gossip.PeerDead, now.Add(-3*time.Second)),
		gp("long-dead", "192.0.2.5", "10.244.5.0/24", gossip.PeerDead, now.Add(-time.Minute)),
		gp("no-subnet", "192.0.2.6", "", gossip.PeerAlive, now),
		gp("thief", "192.0.2.7", "10.244.9.0/24", gossip.PeerAlive, now),
		gp("same-as-me", "192.0.2.8", "10.244.1.0/24", gossip.PeerAlive, now),
		gp("self", "192.0.2.1", "10.244.1.0/24", gossip.PeerAlive, now),
		gp("removed", "192.0.2.9", "10.244.10.0/24", gossip.PeerDead, now.Add(-time.Second)), // rmpeer'd within grace
		gp("left", "192.0.2.11", "10.244.11.0/24", gossip.PeerLeft, now.Add(-time.Second)),
	}
	allocs := []ipam.Allocation{
		{IP: netip.MustParseAddr("10.244.1.7"), HostIf: "loomaaaa"},
		{IP: netip.MustParseAddr("10.244.77.7"), HostIf: "loombbbb"}, // a subnet this node lost
	}
	d, next, excluded := desiredState(localRecord("vxlan"), own, peers, leases, allocs, now, 10*time.Second)
	var names []string
	for _, p := range d.Peers {
		names = append(names, p.Name)
	}
	want := []string{"alive", "suspect", "just-died"}
	if len(names) != len(want) {
		t.Fatalf("programmed peers = %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("programmed peers = %v, want %v", names, want)
		}
	}
	if wantNext := now.Add(7 * time.Second); !next.Equal(wantNext) {
		t.Fatalf("next grace expiry = %s, want %s", next, wantNext)
	}
	if len(d.Pods) != 1 || d.Pods[0].HostIf != "loomaaaa" {
		t.Fatalf("pods = %+v, want only the pod of the own subnet", d.Pods)
	}
	for name, want := range map[string]string{"thief": "older lease", "long-dead": "grace", "removed": "released", "left": "left", "no-subnet": "no subnet"} {
		if !strings.Contains(excluded[name], want) {
			t.Errorf("%s excluded because %q, want a reason mentioning %q", name, excluded[name], want)
		}
	}
	if len(d.NodeAddrs) != 4 {
		t.Fatalf("node addrs = %v, want self and the three programmed peers", d.NodeAddrs)
	}

	// With no grace, a dead peer is withdrawn at once.
	d, _, _ = desiredState(localRecord("vxlan"), own, peers, leases, nil, now, 0)
	if len(d.Peers) != 2 {
		t.Fatalf("with zero grace, peers = %+v", d.Peers)
	}
}

func TestDesiredStateDrivesFakeKernelToExactEntries(t *testing.T) {
	k := overlay.NewFakeKernel()
	eth0 := k.AddDummy("eth0")
	vx := overlay.NewVXLAN(k, overlay.VXLANConfig{Name: "loom.1", VNI: 1, Port: 4789, MTU: 1450,
		MAC: overlay.VTEPMAC("self"), UnderlayIndex: eth0.Attrs().Index, Local: netip.MustParseAddr("192.0.2.1")})
	dp := overlay.NewDataplane(overlay.DataplaneConfig{Kernel: k, Backend: vx, Cluster: netip.MustParsePrefix("10.244.0.0/16")})
	space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	now := time.Now()
	peers := []gossip.Peer{
		gp("a", "192.0.2.2", "10.244.2.0/24", gossip.PeerAlive, now),
		gp("b", "192.0.2.3", "10.244.3.0/24", gossip.PeerAlive, now),
	}
	own := netip.MustParsePrefix("10.244.1.0/24")
	d, _, _ := desiredState(localRecord("vxlan"), own, peers, ipam.NewLeaseTable(space), nil, now, 0)
	if _, err := dp.Apply(d); err != nil {
		t.Fatal(err)
	}
	if n := len(k.Neighs()); n != 4 {
		t.Fatalf("%d neighbour+fdb entries, want 4", n)
	}
	peers[1].State, peers[1].Since = gossip.PeerDead, now.Add(-time.Minute)
	d, _, _ = desiredState(localRecord("vxlan"), own, peers, ipam.NewLeaseTable(space), nil, now, 10*time.Second)
	if _, err := dp.Apply(d); err != nil {
		t.Fatal(err)
	}
	for _, n := range k.Neighs() {
		if n.HardwareAddr.String() == overlay.VTEPMAC("b").String() {
			t.Fatalf("entry of dead peer b left behind: %+v", n)
		}
	}
	for _, r := range k.Routes() {
		if r.Dst.String() == "10.244.3.0/24" {
			t.Fatal("route of dead peer b left behind")
		}
	}
}

// TestDesiredStateRefusesOtherBackends: a fabric runs one backend; a peer
// on another one, or a WireGuard peer without a key, is never programmed
// and the reason says why. Direct routing still talks to plain VXLAN.
func TestDesiredStateRefusesOtherBackends(t *testing.T) {
	space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	now := time.Unix(1_000_000, 0)
	key := make([]byte, gossip.WGKeySize)
	peer := func(name, addr, subnet, backend string, wgKey []byte) gossip.Peer {
		p := gp(name, addr, subnet, gossip.PeerAlive, now)
		p.Record.Backend, p.Record.WGPublicKey = backend, wgKey
		return p
	}
	peers := []gossip.Peer{
		peer("vx", "192.0.2.2", "10.244.2.0/24", "vxlan", nil),
		peer("direct", "192.0.2.3", "10.244.3.0/24", "vxlan+direct", nil),
		peer("old", "192.0.2.4", "10.244.4.0/24", "", nil),
		peer("wg", "192.0.2.5", "10.244.5.0/24", "wireguard", key),
		peer("wg-nokey", "192.0.2.6", "10.244.6.0/24", "wireguard", nil),
	}
	own := netip.MustParsePrefix("10.244.1.0/24")
	for _, tc := range []struct {
		backend    string
		programmed []string
		refused    map[string]string
	}{
		{"vxlan", []string{"direct", "old", "vx"}, map[string]string{"wg": "runs backend wireguard, this node runs vxlan", "wg-nokey": "runs backend wireguard"}},
		{"vxlan+direct", []string{"direct", "old", "vx"}, map[string]string{"wg": "runs backend wireguard"}},
		{"wireguard", []string{"wg"}, map[string]string{"vx": "runs backend vxlan, this node runs wireguard", "wg-nokey": "no WireGuard public key"}},
	} {
		d, _, excluded := desiredState(localRecord(tc.backend), own, peers, ipam.NewLeaseTable(space), nil, now, 0)
		var got []string
		for _, p := range d.Peers {
			got = append(got, p.Name)
		}
		slices.Sort(got)
		if strings.Join(got, ",") != strings.Join(tc.programmed, ",") {
			t.Errorf("%s: programmed %v, want %v", tc.backend, got, tc.programmed)
		}
		for name, want := range tc.refused {
			if why := excluded[name]; !strings.HasPrefix(why, "refused: ") || !strings.Contains(why, want) {
				t.Errorf("%s: %s excluded for %q, want it refused with %q", tc.backend, name, why, want)
			}
		}
	}
}

// localRecord is the record of the node desiredState computes for.
func localRecord(backend string) gossip.NodeRecord {
	return gossip.NodeRecord{Name: "self", Backend: backend, Underlay: netip.MustParseAddr("192.0.2.1")}
}

// TestDesiredStateRefusesOtherTunnelSettings: a peer that receives on
// another port, runs another VNI or carves pods from another space would
// exchange packets (or claims) that both sides drop; it is refused with
// the settings named. Agents that do not
// advertise them (older ones) are taken as before.
func TestDesiredStateRefusesOtherTunnelSettings(t *testing.T) {
	space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	now := time.Unix(1_000_000, 0)
	peer := func(name, addr, subnet string, port uint16, vni uint32) gossip.Peer {
		p := gp(name, addr, subnet, gossip.PeerAlive, now)
		p.Record.Backend, p.Record.TunnelPort, p.Record.VNI = "vxlan", port, vni
		return p
	}
	peers := []gossip.Peer{
		peer("same", "192.0.2.2", "10.244.2.0/24", 4789, 1),
		peer("old", "192.0.2.3", "10.244.3.0/24", 0, 0),
		peer("port", "192.0.2.4", "10.244.4.0/24", 8472, 1),
		peer("vni", "192.0.2.5", "10.244.5.0/24", 4789, 2),
		peer("cidr", "192.0.2.6", "10.245.6.0/24", 4789, 1),
		peer("prefix", "192.0.2.7", "10.244.7.0/25", 4789, 1),
		peer("space", "192.0.2.8", "10.244.8.0/24", 4789, 1),
	}
	peers[4].Record.Cluster, peers[4].Record.SubnetBits = netip.MustParsePrefix("10.245.0.0/16"), 24
	peers[5].Record.Cluster, peers[5].Record.SubnetBits = netip.MustParsePrefix("10.244.0.0/16"), 25
	peers[6].Record.Cluster, peers[6].Record.SubnetBits = netip.MustParsePrefix("10.244.0.0/16"), 24
	local := localRecord("vxlan")
	local.TunnelPort, local.VNI = 4789, 1
	local.Cluster, local.SubnetBits = netip.MustParsePrefix("10.244.0.0/16"), 24
	d, _, excluded := desiredState(local, netip.MustParsePrefix("10.244.1.0/24"), peers, ipam.NewLeaseTable(space), nil, now, 0)
	var got []string
	for _, p := range d.Peers {
		got = append(got, p.Name)
	}
	slices.Sort(got)
	if strings.Join(got, ",") != "old,same,space" {
		t.Errorf("programmed %v, want [old same space]", got)
	}
	for name, want := range map[string]string{
		"port":   "receives vxlan on port 8472, this node on 4789 (all nodes of a fabric need the same --vxlan-port)",
		"vni":    "runs VNI 2, this node 1",
		"cidr":   "pod space 10.245.0.0/16 in /24 subnets, this node 10.244.0.0/16 in /24 (all nodes of a fabric need the same --cluster-cidr and --subnet-prefix)",
		"prefix": "pod space 10.244.0.0/16 in /25 subnets",
	} {
		if why := excluded[name]; !strings.HasPrefix(why, "refused: ") || !strings.Contains(why, want) {
			t.Errorf("%s excluded for %q, want it refused with %q", name, why, want)
		}
	}
}

// TestDesiredStateLimitsRoutesToSmallerPeers: the route to a peer whose
// underlay carries less than this node's (jumbo frames on some nodes
// only) gets the peer's MTU; the others keep the device's.
func TestDesiredStateLimitsRoutesToSmallerPeers(t *testing.T) {
	space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	now := time.Unix(1_000_000, 0)
	peers := []gossip.Peer{
		gp("small", "192.0.2.2", "10.244.2.0/24", gossip.PeerAlive, now),
		gp("jumbo", "192.0.2.3", "10.244.3.0/24", gossip.PeerAlive, now),
		gp("old", "192.0.2.4", "10.244.4.0/24", gossip.PeerAlive, now),
	}
	peers[0].Record.MTU, peers[1].Record.MTU = 1450, 9000
	local := localRecord("vxlan")
	local.MTU = 8950
	d, _, _ := desiredState(local, netip.MustParsePrefix("10.244.1.0/24"), peers, ipam.NewLeaseTable(space), nil, now, 0)
	got := map[string]int{}
	for _, p := range d.Peers {
		got[p.Name] = p.RouteMTU
	}
	if want := map[string]int{"small": 1450, "jumbo": 0, "old": 0}; !maps.Equal(got, want) {
		t.Fatalf("route MTUs %v, want %v", got, want)
	}
}

// A restarted agent keeps (adopts) the entries of the peers it remembers
// until the same membership snapshot its desired state comes from knows
// them all: judged on a later read, a peer merged in between would count
// as known while absent from the desired state, and its routes would be
// removed for a reconcile (packets lost across a restart).
func TestSettledJudgesTheSnapshotItIsGiven(t *testing.T) {
	a := &Agent{cfg: &resolved{}, startedAt: time.Now(), remembered: []string{"192.0.2.2", "192.0.2.3"}}
	now := time.Now()
	if a.settled(nil) {
		t.Fatal("settled with no peer of the last run heard from")
	}
	some := []gossip.Peer{gp("b", "192.0.2.2", "10.244.2.0/24", gossip.PeerAlive, now)}
	if a.settled(some) {
		t.Fatal("settled with one of two remembered peers heard from")
	}
	all := append(some, gp("c", "192.0.2.3", "", gossip.PeerDead, now))
	if !a.settled(all) {
		t.Fatal("not settled with a verdict on every remembered peer")
	}
	a.startedAt = now.Add(-a.settleTimeout() - time.Second)
	if !a.settled(nil) {
		t.Fatal("not settled after the settle timeout")
	}
}
