package overlay

import (
	"github.com/loomnet/loom/api"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func TestLinkNeedsRepair(t *testing.T) {
	pod := api.HostVethName("c1", "eth0")
	update := func(name string, msg uint16, flags, change uint32) netlink.LinkUpdate {
		u := netlink.LinkUpdate{Link: &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, RawFlags: flags}}}
		u.Header.Type = msg
		u.IfInfomsg = nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Flags: flags, Change: change}}
		return u
	}
	none := func(string) bool { return false }
	all := func(string) bool { return true }
	cases := []struct {
		name      string
		u         netlink.LinkUpdate
		detaching func(string) bool
		want      bool
	}{
		{"tunnel device deleted", update("loom.1", unix.RTM_DELLINK, unix.IFF_UP, 0), none, true},
		{"tunnel device down", update("loom.1", unix.RTM_NEWLINK, 0, unix.IFF_UP), none, true},
		{"tunnel device up", update("loom.1", unix.RTM_NEWLINK, unix.IFF_UP, unix.IFF_UP), none, false},
		{"foreign link down", update("eth0", unix.RTM_NEWLINK, 0, unix.IFF_UP), none, false},
		{"pod veth created down", update(pod, unix.RTM_NEWLINK, 0, ^uint32(0)), none, false},
		{"pod veth carrier change while down", update(pod, unix.RTM_NEWLINK, 0, 0), none, false},
		{"pod veth set down by hand", update(pod, unix.RTM_NEWLINK, 0, unix.IFF_UP), none, true},
		{"pod veth set down by DEL", update(pod, unix.RTM_NEWLINK, 0, unix.IFF_UP), all, false},
		{"pod veth deleted", update(pod, unix.RTM_DELLINK, 0, 0), none, false},
	}
	for _, c := range cases {
		if got := linkNeedsRepair(c.u, c.detaching); got != c.want {
			t.Errorf("%s: repair = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestForwardingTurnedOff(t *testing.T) {
	msg := func(ifindex, forwarding int32) []byte {
		b := []byte{unix.AF_INET, 0, 0, 0}
		for _, a := range []struct {
			typ uint16
			v   int32
		}{{netconfaIfindex, ifindex}, {netconfaForwarding, forwarding}} {
			attr := nl.NewRtAttr(int(a.typ), nl.Uint32Attr(uint32(a.v)))
			b = append(b, attr.Serialize()...)
		}
		return b
	}
	for _, c := range []struct {
		name    string
		payload []byte
		want    bool
	}{
		{"all off", msg(netconfIfindexAll, 0), true},
		{"all on", msg(netconfIfindexAll, 1), false},
		{"one interface off", msg(7, 0), false},
		{"default off", msg(-2, 0), false},
		{"truncated", []byte{unix.AF_INET}, false},
		{"garbage attributes", []byte{unix.AF_INET, 0, 0, 0, 0xff, 0xff}, false},
	} {
		if got := forwardingTurnedOff(c.payload); got != c.want {
			t.Errorf("%s: forwardingTurnedOff = %v, want %v", c.name, got, c.want)
		}
	}
}
