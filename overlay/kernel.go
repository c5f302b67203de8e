// Package overlay is Loom's Linux data plane: the tunnel device, each peer's
// neighbour, FDB and route entries, the host side of pod veths, and
// nftables rules. It reconciles a desired state against what the kernel has
// and applies only the difference.
package overlay

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
)

// ErrLinkNotFound is returned by Kernel.LinkByName for a missing link.
var ErrLinkNotFound = errors.New("link not found")

// Kernel is the slice of netlink the data plane needs. The real
// implementation talks to the kernel; unit tests use an in-memory fake.
// Deletes of entries that are already gone succeed.
type Kernel interface {
	LinkByName(name string) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetDown(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error

	// AddrList lists a link's addresses of a family (netlink.FAMILY_V4,
	// FAMILY_V6 or FAMILY_ALL); a nil link lists every link's.
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error

	// NeighList lists neighbour (family AF_INET) or FDB (AF_BRIDGE) entries.
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(n *netlink.Neigh) error
	NeighDel(n *netlink.Neigh) error

	// RouteList lists routes of a family (netlink.FAMILY_V4 or FAMILY_V6).
	RouteList(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteReplace(r *netlink.Route) error
	RouteDel(r *netlink.Route) error

	// ConntrackDelete deletes the IPv4 connection tracking entries with an
	// address in one of prefixes, and returns how many.
	ConntrackDelete(prefixes []netip.Prefix) (uint, error)
}

// WriteCounter counts the kernel writes made through it, by kind, so that
// tests and metrics can see that a no-op resync writes nothing.
type WriteCounter struct {
	Kernel
	links, addrs, neighs, routes atomic.Int64
	// errs counts failed writes by kind, in the order of WritesByKind.
	errs [4]atomic.Int64
}

// ErrorsByKind returns failed writes per kind.
func (w *WriteCounter) ErrorsByKind() map[string]int64 {
	return map[string]int64{"link": w.errs[0].Load(), "addr": w.errs[1].Load(), "neigh": w.errs[2].Load(), "route": w.errs[3].Load()}
}

func (w *WriteCounter) note(kind int, err error) error {
	if err != nil {
		w.errs[kind].Add(1)
	}
	return err
}

// Writes returns the total number of writes so far.
func (w *WriteCounter) Writes() int64 {
	return w.links.Load() + w.addrs.Load() + w.neighs.Load() + w.routes.Load()
}

// WritesByKind returns writes per kind: link, addr, neigh, route.
func (w *WriteCounter) WritesByKind() map[string]int64 {
	return map[string]int64{
		"link": w.links.Load(), "addr": w.addrs.Load(),
		"neigh": w.neighs.Load(), "route": w.routes.Load(),
	}
}

func (w *WriteCounter) LinkAdd(l netlink.Link) error {
	w.links.Add(1)
	return w.note(0, w.Kernel.LinkAdd(l))
}
func (w *WriteCounter) LinkDel(l netlink.Link) error {
	w.links.Add(1)
	return w.note(0, w.Kernel.LinkDel(l))
}
func (w *WriteCounter) LinkSetUp(l netlink.Link) error {
	w.links.Add(1)
	return w.note(0, w.Kernel.LinkSetUp(l))
}
func (w *WriteCounter) LinkSetDown(l netlink.Link) error {
	w.links.Add(1)
	return w.note(0, w.Kernel.LinkSetDown(l))
}
func (w *WriteCounter) LinkSetMTU(l netlink.Link, mtu int) error {
	w.links.Add(1)
	return w.note(0, w.Kernel.LinkSetMTU(l, mtu))
}
func (w *WriteCounter) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	w.addrs.Add(1)
	return w.note(1, w.Kernel.AddrReplace(l, a))
}
func (w *WriteCounter) AddrDel(l netlink.Link, a *netlink.Addr) error {
	w.addrs.Add(1)
	return w.note(1, w.Kernel.AddrDel(l, a))
}
func (w *WriteCounter) NeighSet(n *netlink.Neigh) error {
	w.neighs.Add(1)
	return w.note(2, w.Kernel.NeighSet(n))
}
func (w *WriteCounter) NeighDel(n *netlink.Neigh) error {
	w.neighs.Add(1)
	return w.note(2, w.Kernel.NeighDel(n))
}
func (w *WriteCounter) RouteReplace(r *netlink.Route) error {
	w.routes.Add(1)
	return w.note(3, w.Kernel.RouteReplace(r))
}
func (w *WriteCounter) RouteDel(r *netlink.Route) error {
	w.routes.Add(1)
	return w.note(3, w.Kernel.RouteDel(r))
}
