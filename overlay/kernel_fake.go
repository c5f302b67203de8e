package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FakeKernel is an in-memory Kernel for unit tests. It models only what the
// data plane relies on: links by name and index, addresses, neighbour and
// FDB entries per link, and routes keyed by destination and table.
type FakeKernel struct {
	// mu guards everything below.
	mu        sync.Mutex
	nextIndex int
	links     map[string]netlink.Link
	addrs     map[int][]netlink.Addr
	neighs    map[string]netlink.Neigh
	routes    map[string]netlink.Route
	// swept lists every prefix ConntrackDelete was asked for.
	swept []netip.Prefix
}

var _ Kernel = (*FakeKernel)(nil)

// NewFakeKernel returns an empty fake with no links.
func NewFakeKernel() *FakeKernel {
	return &FakeKernel{nextIndex: 1, links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{},
		neighs: map[string]netlink.Neigh{}, routes: map[string]netlink.Route{}}
}

func (f *FakeKernel) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrLinkNotFound)
	}
	return l, nil
}

func (f *FakeKernel) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]netlink.Link, 0, len(f.links))
	for _, l := range f.links {
		out = append(out, l)
	}
	return out, nil
}

// AddDummy adds a plain link (an underlay or a pod veth) and returns it.
func (f *FakeKernel) AddDummy(name string) netlink.Link {
	l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1500}}
	if err := f.LinkAdd(l); err != nil {
		panic(err)
	}
	return l
}

func (f *FakeKernel) LinkAdd(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[l.Attrs().Name]; ok {
		return unix.EEXIST
	}
	// Like the kernel, one VXLAN device per VNI and UDP port.
	if x, ok := l.(*netlink.Vxlan); ok {
		for _, o := range f.links {
			if ox, ok := o.(*netlink.Vxlan); ok && ox.VxlanId == x.VxlanId && ox.Port == x.Port {
				return unix.EEXIST
			}
		}
	}
	l.Attrs().Index = f.nextIndex
	f.nextIndex++
	f.links[l.Attrs().Name] = l
	return nil
}

func (f *FakeKernel) LinkDel(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.links[l.Attrs().Name]
	if !ok {
		return nil
	}
	idx := cur.Attrs().Index
	delete(f.links, l.Attrs().Name)
	delete(f.addrs, idx)
	for k, n := range f.neighs {
		if n.LinkIndex == idx {
			delete(f.neighs, k)
		}
	}
	for k, r := range f.routes {
		if r.LinkIndex == idx {
			delete(f.routes, k)
		}
	}
	return nil
}

func (f *FakeKernel) LinkSetUp(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.links[l.Attrs().Name]; ok {
		cur.Attrs().Flags |= net.FlagUp
		return nil
	}
	return unix.ENODEV
}

// LinkSetDown also drops the routes through the link, as the kernel does.
func (f *FakeKernel) LinkSetDown(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.links[l.Attrs().Name]
	if !ok {
		return unix.ENODEV
	}
	cur.Attrs().Flags &^= net.FlagUp
	for k, r := range f.routes {
		if r.LinkIndex == cur.Attrs().Index {
			delete(f.routes, k)
		}
	}
	return nil
}

func (f *FakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.links[l.Attrs().Name]; ok {
		cur.Attrs().MTU = mtu
		return nil
	}
	return unix.ENODEV
}

func (f *FakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Addr
	for idx, as := range f.addrs {
		if l != nil && idx != l.Attrs().Index {
			continue
		}
		for _, a := range as {
			if family == netlink.FAMILY_ALL || (a.IP.To4() != nil) == (family == netlink.FAMILY_V4) {
				a.LinkIndex = idx
				out = append(out, a)
			}
		}
	}
	return out, nil
}

func (f *FakeKernel) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := l.Attrs().Index
	f.addrs[idx] = filter(f.addrs[idx], func(x netlink.Addr) bool { return x.IPNet.String() != a.IPNet.String() })
	f.addrs[idx] = append(f.addrs[idx], *a)
	return nil
}

func (f *FakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := l.Attrs().Index
	f.addrs[idx] = filter(f.addrs[idx], func(x netlink.Addr) bool { return x.IPNet.String() != a.IPNet.String() })
	return nil
}

func neighKey(n netlink.Neigh) string {
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("%d/fdb/%s", n.LinkIndex, n.HardwareAddr)
	}
	return fmt.Sprintf("%d/%d/%s", n.LinkIndex, n.Family, n.IP)
}

func (f *FakeKernel) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Neigh
	for _, n := range f.neighs {
		if (linkIndex == 0 || n.LinkIndex == linkIndex) && n.Family == family {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *FakeKernel) NeighSet(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.neighs[neighKey(*n)] = *n
	return nil
}

func (f *FakeKernel) NeighDel(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.neighs, neighKey(*n))
	return nil
}

func routeTable(r netlink.Route) int {
	if r.Table == 0 {
		return mainTable
	}
	return r.Table
}

func fakeRouteKey(r netlink.Route) string {
	return fmt.Sprintf("%s/%d", r.Dst, routeTable(r))
}

func (f *FakeKernel) RouteList(family int, flt *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Route
	for _, r := range f.routes {
		if routeFamily(r) != family {
			continue
		}
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != flt.Protocol {
			continue
		}
		if mask&netlink.RT_FILTER_TABLE != 0 && routeTable(r) != routeTable(*flt) {
			continue
		}
		if mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != flt.LinkIndex {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// routeFamily is the family of a route's destination, or of its gateway
// for a default route.
func routeFamily(r netlink.Route) int {
	switch {
	case r.Dst != nil && r.Dst.IP.To4() == nil, r.Dst == nil && r.Gw != nil && r.Gw.To4() == nil:
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func (f *FakeKernel) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	nr := *r
	nr.Table = routeTable(nr)
	f.routes[fakeRouteKey(nr)] = nr
	return nil
}

func (f *FakeKernel) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, fakeRouteKey(*r))
	return nil
}

// Routes returns a copy of every route.
func (f *FakeKernel) Routes() []netlink.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]netlink.Route, 0, len(f.routes))
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out
}

// Neighs returns a copy of every neighbour and FDB entry.
func (f *FakeKernel) Neighs() []netlink.Neigh {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]netlink.Neigh, 0, len(f.neighs))
	for _, n := range f.neighs {
		out = append(out, n)
	}
	return out
}

func filter[T any](in []T, keep func(T) bool) []T {
	out := make([]T, 0, len(in))
	for _, x := range in {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

// ConntrackDelete records the prefixes; the fake tracks no connections.
func (f *FakeKernel) ConntrackDelete(prefixes []netip.Prefix) (uint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.swept = append(f.swept, prefixes...)
	return 0, nil
}

// Swept returns every prefix ConntrackDelete was asked for.
func (f *FakeKernel) Swept() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.swept)
}
