package agent

import (
	"strings"
	"testing"

	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

func underlayAgent(t *testing.T, cfg Config) (*Agent, *overlay.FakeKernel) {
	k := fakeHost(t).(*overlay.FakeKernel)
	r, err := Resolve(cfg, k)
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{cfg: r, kernel: &overlay.WriteCounter{Kernel: k}, log: zap.NewNop()}, k
}

// The advertised address leaving --iface makes the node not ready; another
// address on the interface is reported as where the node moved; the old
// address coming back makes it ready again.
func TestCheckUnderlayFollowsTheAddress(t *testing.T) {
	a, k := underlayAgent(t, validConfig())
	eth0, _ := k.LinkByName("eth0")
	if c := a.checkUnderlay(); c.restart() || a.underlayProblem != "" {
		t.Fatalf("address in place: %+v, reason %q; want neither", c, a.underlayProblem)
	}

	old := &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")}
	if err := k.AddrDel(eth0, old); err != nil {
		t.Fatal(err)
	}
	if c := a.checkUnderlay(); c.restart() {
		t.Fatalf("no address on eth0: %+v, want to wait until one comes", c)
	}
	if !strings.Contains(a.underlayProblem, "192.0.2.10 is no longer on eth0") {
		t.Fatalf("not-ready reason %q does not name the lost address and interface", a.underlayProblem)
	}

	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "169.254.3.3/16")})
	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.77/24")})
	if c := a.checkUnderlay(); c.movedTo.String() != "192.0.2.77" {
		t.Fatalf("moved to %v, want 192.0.2.77 (link-local addresses are not reachable underlay)", c.movedTo)
	}

	k.AddrReplace(eth0, old)
	if c := a.checkUnderlay(); c.restart() || a.underlayProblem != "" {
		t.Fatalf("address back: %+v, reason %q; want neither", c, a.underlayProblem)
	}
}

// --iface deleted is a readiness problem; created again (a new index) it
// needs a restart, with or without --advertise-addr, once it has the
// address back.
func TestCheckUnderlayNoticesARecreatedInterface(t *testing.T) {
	explicit := validConfig()
	explicit.AdvertiseAddr = "203.0.113.9"
	for name, cfg := range map[string]Config{"derived": validConfig(), "--advertise-addr": explicit} {
		a, k := underlayAgent(t, cfg)
		eth0, _ := k.LinkByName("eth0")
		if err := k.LinkDel(eth0); err != nil {
			t.Fatal(err)
		}
		if c := a.checkUnderlay(); c.restart() || !strings.Contains(a.underlayProblem, "underlay interface eth0 is gone") {
			t.Fatalf("%s: eth0 deleted: %+v, reason %q", name, c, a.underlayProblem)
		}
		again := k.AddDummy("eth0")
		k.AddrReplace(again, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")})
		if c := a.checkUnderlay(); !c.recreated || c.movedTo.IsValid() || a.underlayProblem != "" {
			t.Fatalf("%s: eth0 created again: %+v, reason %q; want a restart at the same address", name, c, a.underlayProblem)
		}
	}
}

// An overlay MTU derived from --iface follows the interface's; one given
// with --mtu does not.
func TestCheckUnderlayNoticesAnMTUChange(t *testing.T) {
	explicit := validConfig()
	explicit.MTU = 1400
	for name, tc := range map[string]struct {
		cfg  Config
		want int
	}{"derived": {validConfig(), 9000}, "--mtu": {explicit, 0}} {
		a, k := underlayAgent(t, tc.cfg)
		eth0, _ := k.LinkByName("eth0")
		if c := a.checkUnderlay(); c.restart() {
			t.Fatalf("%s: nothing changed: %+v", name, c)
		}
		if err := k.LinkSetMTU(eth0, 9000); err != nil {
			t.Fatal(err)
		}
		if c := a.checkUnderlay(); c.mtu != tc.want || c.restart() != (tc.want != 0) {
			t.Fatalf("%s: eth0 at MTU 9000: %+v, want new MTU %d", name, c, tc.want)
		}
	}
}

// The tunnel sends from an address the node owns: the advertised one if
// it is on any of the node's interfaces, else (a NAT's public address)
// --iface's own, which loomd then follows as it would a derived one.
func TestTunnelSourceBehindNAT(t *testing.T) {
	k := fakeHost(t).(*overlay.FakeKernel)
	eth1 := k.AddDummy("eth1")
	k.AddrReplace(eth1, &netlink.Addr{IPNet: mustIPNet(t, "198.51.100.4/24")})
	for advertise, want := range map[string]string{
		"":             "192.0.2.10",
		"192.0.2.10":   "192.0.2.10",
		"198.51.100.4": "198.51.100.4", // on another interface: the kernel can send from it
		"203.0.113.9":  "192.0.2.10",   // a NAT's
	} {
		cfg := validConfig()
		cfg.AdvertiseAddr = advertise
		r, err := Resolve(cfg, k)
		if err != nil {
			t.Fatal(err)
		}
		if r.source.String() != want {
			t.Errorf("--advertise-addr %q: tunnel source %s, want %s", advertise, r.source, want)
		}
	}

	cfg := validConfig()
	cfg.AdvertiseAddr = "203.0.113.9"
	a, k := underlayAgent(t, cfg)
	eth0, _ := k.LinkByName("eth0")
	k.AddrDel(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")})
	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.77/24")})
	if c := a.checkUnderlay(); c.movedTo.String() != "192.0.2.77" {
		t.Fatalf("behind a NAT, --iface's address changed: %+v, want a restart to send from 192.0.2.77", c)
	}

	empty := overlay.NewFakeKernel()
	empty.AddDummy("eth0")
	if _, err := Resolve(cfg, empty); err == nil || !strings.Contains(err.Error(), "no IPv4 address to send tunnel packets from") {
		t.Fatalf("a NAT's address and no address on --iface: %v", err)
	}
}
