package agent

import (
	"strings"
	"testing"

	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// The advertised address leaving --iface makes the node not ready; another
// address on the interface is reported as where the node moved; the old
// address coming back makes it ready again.
func TestCheckUnderlayFollowsTheInterface(t *testing.T) {
	k := fakeHost(t)
	r, err := Resolve(validConfig(), k)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: r, kernel: &overlay.WriteCounter{Kernel: k}, log: zap.NewNop()}
	eth0, _ := k.LinkByName("eth0")
	if to := a.checkUnderlay(); to.IsValid() || a.underlayLostReason() != "" {
		t.Fatalf("address in place: moved to %v, reason %q; want neither", to, a.underlayLostReason())
	}

	old := &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.10/24")}
	if err := k.AddrDel(eth0, old); err != nil {
		t.Fatal(err)
	}
	if to := a.checkUnderlay(); to.IsValid() {
		t.Fatalf("no address on eth0: moved to %v, want nothing until one comes", to)
	}
	if why := a.underlayLostReason(); !strings.Contains(why, "192.0.2.10 is no longer on eth0") {
		t.Fatalf("not-ready reason %q does not name the lost address and interface", why)
	}

	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "169.254.3.3/16")})
	k.AddrReplace(eth0, &netlink.Addr{IPNet: mustIPNet(t, "192.0.2.77/24")})
	if to := a.checkUnderlay(); to.String() != "192.0.2.77" {
		t.Fatalf("moved to %v, want 192.0.2.77 (link-local addresses are not reachable underlay)", to)
	}

	k.AddrReplace(eth0, old)
	if to := a.checkUnderlay(); to.IsValid() || a.underlayLostReason() != "" {
		t.Fatalf("address back: moved to %v, reason %q; want neither", to, a.underlayLostReason())
	}
}
