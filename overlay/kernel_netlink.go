package overlay

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds retries of a netlink dump the kernel interrupted
// because the table changed while it was being read.
const dumpRetries = 5

// NetlinkKernel is the real Kernel, bound to one network namespace through
// a netlink handle, so no goroutine ever has to setns.
type NetlinkKernel struct {
	h *netlink.Handle
}

// NewNetlinkKernel returns a Kernel for the current network namespace.
func NewNetlinkKernel() (*NetlinkKernel, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return &NetlinkKernel{h: h}, nil
}

// NewNetlinkKernelAt returns a Kernel for the namespace ns.
func NewNetlinkKernelAt(ns netns.NsHandle) (*NetlinkKernel, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in netns: %w", err)
	}
	return &NetlinkKernel{h: h}, nil
}

// Close releases the netlink sockets.
func (k *NetlinkKernel) Close() { k.h.Close() }

// retryDump repeats a dump while the kernel reports it was interrupted.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for i := 0; i < dumpRetries; i++ {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

func (k *NetlinkKernel) LinkByName(name string) (netlink.Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%s: %w", name, ErrLinkNotFound)
		}
		return nil, err
	}
	return l, nil
}

func (k *NetlinkKernel) LinkList() ([]netlink.Link, error) {
	return retryDump(k.h.LinkList)
}
func (k *NetlinkKernel) LinkAdd(l netlink.Link) error           { return k.h.LinkAdd(l) }
func (k *NetlinkKernel) LinkDel(l netlink.Link) error           { return ignoreGone(k.h.LinkDel(l)) }
func (k *NetlinkKernel) LinkSetUp(l netlink.Link) error         { return k.h.LinkSetUp(l) }
func (k *NetlinkKernel) LinkSetDown(l netlink.Link) error       { return k.h.LinkSetDown(l) }
func (k *NetlinkKernel) LinkSetMTU(l netlink.Link, m int) error { return k.h.LinkSetMTU(l, m) }

func (k *NetlinkKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return k.h.AddrList(l, family) })
}
func (k *NetlinkKernel) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	return k.h.AddrReplace(l, a)
}
func (k *NetlinkKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	return ignoreGone(k.h.AddrDel(l, a))
}

func (k *NetlinkKernel) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(linkIndex, family) })
}
func (k *NetlinkKernel) NeighSet(n *netlink.Neigh) error { return k.h.NeighSet(n) }
func (k *NetlinkKernel) NeighDel(n *netlink.Neigh) error { return ignoreGone(k.h.NeighDel(n)) }

func (k *NetlinkKernel) RouteList(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(family, filter, mask)
	})
}
func (k *NetlinkKernel) RouteReplace(r *netlink.Route) error { return k.h.RouteReplace(r) }
func (k *NetlinkKernel) RouteDel(r *netlink.Route) error     { return ignoreGone(k.h.RouteDel(r)) }

// ConntrackDelete reads the table once for all prefixes. A dump that a
// concurrent change interrupted still deletes what it read; the error
// says so, and entries it missed stay (the next sweep may find them).
func (k *NetlinkKernel) ConntrackDelete(prefixes []netip.Prefix) (uint, error) {
	return k.h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, newFlowFilter(prefixes))
}
