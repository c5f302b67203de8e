package agent

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func fakeHost(t *testing.T) overlay.Kernel {
	k := overlay.NewFakeKernel()
	eth0 := k.AddDummy("eth0")
	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")})
	return k
}

func mustIPNet(t *testing.T, s string) *net.IPNet {
	n, err := netlink.ParseIPNet(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func validConfig() Config {
	c := DefaultConfig()
	c.NodeName = "node1"
	c.Iface = "eth0"
	c.InsecureGossip = true
	return c
}

func TestResolveDerivesAddressAndMTU(t *testing.T) {
	r, err := Resolve(validConfig(), fakeHost(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.advertise.String() != "192.0.2.10" || r.mtu != 1450 {
		t.Fatalf("advertise %s mtu %d, want 192.0.2.10 and 1450", r.advertise, r.mtu)
	}
}

// Without --iface the default route's interface is the underlay: the
// IPv4 one's, or the IPv6 one's on a host without it.
func TestResolvePicksTheDefaultRouteInterface(t *testing.T) {
	for _, tc := range []struct {
		other, otherNet, own, gw string
	}{
		{"198.51.100.7/24", "198.51.100.0/24", "192.0.2.10/24", "192.0.2.1"},
		{"2001:db8:1::7/64", "2001:db8:1::/64", "2001:db8::10/64", "fe80::1"},
	} {
		k := overlay.NewFakeKernel()
		other := k.AddDummy("eth1")
		k.AddrReplace(other, &netlink.Addr{IPNet: mustIPNet(t, tc.other)})
		k.RouteReplace(&netlink.Route{LinkIndex: other.Attrs().Index, Dst: mustIPNet(t, tc.otherNet)})
		eth0 := k.AddDummy("eth0")
		k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, tc.own)})
		k.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP(tc.gw)})
		c := validConfig()
		c.Iface = ""
		r, err := Resolve(c, k)
		if err != nil {
			t.Fatal(err)
		}
		want := netip.MustParsePrefix(tc.own).Addr()
		if r.Iface != "eth0" || r.advertise != want {
			t.Fatalf("picked %s (%s), want eth0 (%s), the default route's", r.Iface, r.advertise, want)
		}
	}
}

func TestResolveNamesTheBadFlag(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte("not base64!\n"), 0o600)
	shortKey := filepath.Join(t.TempDir(), "short")
	os.WriteFile(shortKey, []byte("c2hvcnQ=\n"), 0o600)
	// host marks a value only wrong on this host (its interfaces and
	// files); Validate, which reads neither, must pass it and catch the
	// rest.
	cases := []struct {
		flag string
		mod  func(*Config)
		host bool
	}{
		{"cluster-cidr", func(c *Config) { c.ClusterCIDR = "10.244.0.1/16" }, false},
		{"cluster-cidr", func(c *Config) { c.ClusterCIDR = "banana" }, false},
		{"cluster-cidr", func(c *Config) { c.ClusterCIDR = "fd00::/64" }, false},
		{"subnet-prefix", func(c *Config) { c.SubnetPrefix = 16 }, false},
		{"subnet-prefix", func(c *Config) { c.SubnetPrefix = 8 }, false},
		{"iface", func(c *Config) { c.Iface = "nope0" }, true},
		{"iface", func(c *Config) { c.Iface = "" }, true}, // and no default route
		{"advertise-addr", func(c *Config) { c.AdvertiseAddr = "300.1.1.1" }, false},
		{"gossip-key-file", func(c *Config) { c.InsecureGossip = false }, false},
		{"gossip-key-file", func(c *Config) { c.InsecureGossip = false; c.GossipKeyFile = "/nonexistent/key" }, true},
		{"gossip-key-file", func(c *Config) { c.InsecureGossip = false; c.GossipKeyFile = keyFile }, true},
		{"gossip-key-file", func(c *Config) { c.InsecureGossip = false; c.GossipKeyFile = shortKey }, true},
		{"insecure-gossip", func(c *Config) { c.GossipKeyFile = shortKey }, false},
		{"vni", func(c *Config) { c.VNI = 0 }, false},
		{"vxlan-port", func(c *Config) { c.VXLANPort = 70000 }, false},
		{"gossip-port", func(c *Config) { c.GossipPort = 0 }, false},
		{"mtu", func(c *Config) { c.MTU = 100 }, false},
		{"socket", func(c *Config) { c.Socket = "/run/" + strings.Repeat("s", 103) }, false},
		{"cluster-cidr", func(c *Config) { c.ClusterCIDR = "192.0.0.0/8" }, true},
		{"cluster-cidr", func(c *Config) { c.ClusterCIDR = "192.0.2.128/25"; c.SubnetPrefix = 28 }, true},
		{"cluster-cidr", func(c *Config) { c.AdvertiseAddr = "10.244.9.9" }, true},
		{"underlay-cidrs", func(c *Config) { c.UnderlayCIDRs = []string{"198.51.100.0/24"} }, true},
		{"join", func(c *Config) { c.Join = []string{"192.0.2.7", "[2001:db8::7]:7946"} }, true},
		{"join", func(c *Config) { c.Join = []string{"2001:db8::7"} }, true},
		{"node-name", func(c *Config) { c.NodeName = "bad name" }, false},
		{"log-level", func(c *Config) { c.LogLevel = "loud" }, false},
		{"metrics-addr", func(c *Config) { c.MetricsAddr = "nocolon" }, false},
		{"gossip-profile", func(c *Config) { c.GossipProfile = "moon" }, false},
		{"kubeconfig", func(c *Config) { c.Kubeconfig = "/nonexistent/kubeconfig" }, true},
		{"kubeconfig", func(c *Config) { c.Kubeconfig = keyFile; c.PolicySource = PolicySourceNone }, false},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mod(&c)
		_, err := Resolve(c, fakeHost(t))
		var fe *FlagError
		if !errors.As(err, &fe) || fe.Flag != tc.flag || !strings.Contains(err.Error(), "--"+tc.flag) {
			t.Errorf("want error naming --%s, got %v", tc.flag, err)
		}
		err = Validate(c)
		switch {
		case tc.host && err != nil:
			t.Errorf("Validate refused a value only wrong on this host (--%s): %v", tc.flag, err)
		case !tc.host && (!errors.As(err, &fe) || fe.Flag != tc.flag):
			t.Errorf("Validate: want error naming --%s, got %v", tc.flag, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys("# rotation\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n")
	if err != nil || len(keys) != 2 || keys[1][0] != 1 {
		t.Fatalf("keys = %v, err = %v", keys, err)
	}
	if _, err := ParseKeys("\n# nothing\n"); err == nil {
		t.Fatal("empty key file accepted")
	}
}

func TestValidateRecord(t *testing.T) {
	c := validConfig()
	c.UnderlayCIDRs = []string{"192.0.2.0/24"}
	r, err := Resolve(c, fakeHost(t))
	if err != nil {
		t.Fatal(err)
	}
	good := gossip.NodeRecord{Name: "p", Underlay: netip.MustParseAddr("192.0.2.7"), VTEPMAC: overlay.VTEPMAC("p"), Subnet: netip.MustParsePrefix("10.244.9.0/24")}
	if err := r.validateRecord(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*gossip.NodeRecord){
		"underlay outside allow-list": func(n *gossip.NodeRecord) { n.Underlay = netip.MustParseAddr("198.51.100.1") },
		"subnet outside cluster":      func(n *gossip.NodeRecord) { n.Subnet = netip.MustParsePrefix("10.9.0.0/24") },
		"subnet wrong size":           func(n *gossip.NodeRecord) { n.Subnet = netip.MustParsePrefix("10.244.9.0/25") },
		"IPv6 underlay, IPv4 fabric":  func(n *gossip.NodeRecord) { n.Underlay = netip.MustParseAddr("2001:db8::1") },
		"subnet outside the space it declares as ours": func(n *gossip.NodeRecord) {
			n.Cluster, n.SubnetBits, n.Subnet = r.cluster, 24, netip.MustParsePrefix("10.9.0.0/24")
		},
	} {
		rec := good
		mod(&rec)
		if err := r.validateRecord(rec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	open, err := Resolve(validConfig(), fakeHost(t)) // no allow-list
	if err != nil {
		t.Fatal(err)
	}
	inside := good
	inside.Underlay = netip.MustParseAddr("10.244.200.7")
	if err := open.validateRecord(inside); err == nil || !strings.Contains(err.Error(), "inside the cluster CIDR") {
		t.Errorf("a peer whose underlay address is inside the cluster CIDR: err = %v", err)
	}
	// A node that declares another pod space is kept (and refused later,
	// with the reason), not dropped as invalid.
	other := good
	other.Cluster, other.SubnetBits, other.Subnet = netip.MustParsePrefix("10.245.0.0/16"), 24, netip.MustParsePrefix("10.245.3.0/24")
	if err := r.validateRecord(other); err != nil {
		t.Fatalf("record declaring another pod space: %v", err)
	}
}

// TestResolveIPv6Underlay covers an underlay interface with IPv6
// addresses: without --advertise-addr an IPv4 address wins, else the
// first stable global IPv6 one; the overlay MTU leaves VXLAN's 70 bytes
// over IPv6; addresses peers cannot reach are refused; and peers must use
// the node's family.
func TestResolveIPv6Underlay(t *testing.T) {
	host := func(v4 bool) overlay.Kernel {
		k := overlay.NewFakeKernel()
		eth0 := k.AddDummy("eth0")
		k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "fe80::1/64")})
		k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "2001:db8::5/64"), Flags: unix.IFA_F_TEMPORARY})
		k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "2001:db8::6/64"), Flags: unix.IFA_F_DEPRECATED})
		k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "2001:db8::10/64")})
		if v4 {
			k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")})
		}
		return k
	}
	for _, tc := range []struct {
		name      string
		v4        bool
		advertise string
		want      string
		mtu       int
	}{
		{"IPv6 only", false, "", "2001:db8::10", 1430},
		{"both, IPv4 wins", true, "", "192.0.2.10", 1450},
		{"both, IPv6 asked for", true, "2001:db8::10", "2001:db8::10", 1430},
	} {
		c := validConfig()
		c.AdvertiseAddr = tc.advertise
		r, err := Resolve(c, host(tc.v4))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.advertise.String() != tc.want || r.source != r.advertise || r.mtu != tc.mtu {
			t.Errorf("%s: advertise %s source %s mtu %d, want %s and MTU %d", tc.name, r.advertise, r.source, r.mtu, tc.want, tc.mtu)
		}
	}
	for _, bad := range []string{"fe80::1", "fe80::1%eth0", "::1", "ff02::1", "::"} {
		c := validConfig()
		c.AdvertiseAddr = bad
		if _, err := Resolve(c, host(true)); err == nil || !strings.Contains(err.Error(), "--advertise-addr") {
			t.Errorf("--advertise-addr %s: err = %v", bad, err)
		}
	}
	// Behind a NAT the tunnel sends from an address of the advertised
	// family, which an IPv4-only interface does not have.
	c := validConfig()
	c.AdvertiseAddr = "2001:db8:99::1"
	if _, err := Resolve(c, fakeHost(t)); err == nil || !strings.Contains(err.Error(), "no IPv6 address") {
		t.Errorf("IPv6 NAT address on an IPv4-only interface: err = %v", err)
	}

	c = validConfig()
	c.Join = []string{"[2001:db8::7]:7946", "2001:db8::8", "node3.example"}
	r, err := Resolve(c, host(false))
	if err != nil {
		t.Fatalf("IPv6 node joining IPv6 addresses and a name: %v", err)
	}
	peer := gossip.NodeRecord{Name: "p", Underlay: netip.MustParseAddr("2001:db8::7"), VTEPMAC: overlay.VTEPMAC("p"), Subnet: netip.MustParsePrefix("10.244.9.0/24")}
	if err := r.validateRecord(peer); err != nil {
		t.Fatalf("IPv6 peer of an IPv6 node: %v", err)
	}
	peer.Underlay = netip.MustParseAddr("192.0.2.7")
	if err := r.validateRecord(peer); err == nil || !strings.Contains(err.Error(), "one address family") {
		t.Errorf("IPv4 peer of an IPv6 node: err = %v", err)
	}
	peer.Underlay = netip.MustParseAddr("fe80::7")
	if err := r.validateRecord(peer); err == nil {
		t.Errorf("link-local peer accepted")
	}
}
