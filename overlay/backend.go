package overlay

import (
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Backend decides how a peer's subnet is reached: VXLAN today, direct
// routing and WireGuard later. Nothing outside a backend assumes VXLAN.
type Backend interface {
	// Name is the backend's name as configured and gossiped ("vxlan").
	Name() string
	// EnsureDevice creates or repairs the backend's device and gives it the
	// node's overlay address. It reports whether it had to change anything.
	EnsureDevice(overlayIP netip.Addr) (changed bool, err error)
	// DeviceIndex is the link index of the backend's device (0 if none).
	DeviceIndex() int
	// AddPeers programs per-peer state that must exist before the peer's
	// route (neighbour, FDB). It returns how many entries it wrote.
	AddPeers(peers []Peer) (int, error)
	// PeerRoutes returns the route to each peer's subnet.
	PeerRoutes(peers []Peer) []netlink.Route
	// RemoveStale deletes per-peer state for anything not in peers, after
	// the routes that used it are gone. It returns how many it removed.
	RemoveStale(peers []Peer) (int, error)
	// Teardown removes the device and everything on it.
	Teardown() error
}
