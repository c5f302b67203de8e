package overlay

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuardDevice is the name of the WireGuard backend's device.
const WireGuardDevice = "loom-wg"

// WireGuard modes: the kernel's module, or wireguard-go in this process
// on a TUN device where the module is missing.
const (
	WireGuardKernel    = "kernel"
	WireGuardUserspace = "userspace"
)

// WireGuardConfig configures the WireGuard backend.
type WireGuardConfig struct {
	// Name is the device name ("loom-wg").
	Name       string
	Port       int
	MTU        int
	PrivateKey wgtypes.Key
	// Keepalive keeps NAT mappings open; 0 disables.
	Keepalive time.Duration
	// ForceUserspace skips the kernel module (tests, benchmarks).
	ForceUserspace bool
}

// WireGuard routes each peer's pod subnet through one WireGuard device,
// encrypted and authenticated by the peers' keys. Both modes are
// configured with the same wgtypes.Config: wgctrl for the kernel device,
// the same configuration as UAPI text for the userspace one.
type WireGuard struct {
	k   Kernel
	cfg WireGuardConfig

	// mu guards the fields below.
	mu      sync.Mutex
	mode    string
	index   int
	user    *device.Device
	applied string // fingerprint of the peer configuration in force
}

var _ Backend = (*WireGuard)(nil)

// NewWireGuard returns the backend; the device is made by EnsureDevice.
func NewWireGuard(k Kernel, cfg WireGuardConfig) *WireGuard {
	return &WireGuard{k: k, cfg: cfg}
}

// Name implements Backend.
func (w *WireGuard) Name() string { return "wireguard" }

// Mode is kernel or userspace once the device exists ("" before).
func (w *WireGuard) Mode() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mode
}

// DeviceIndex implements Backend.
func (w *WireGuard) DeviceIndex() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.index
}

// EnsureDevice implements Backend: the kernel device when the module is
// there, else a userspace one; then the key, port, address, MTU and up.
func (w *WireGuard) EnsureDevice(overlayIP netip.Addr) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := false
	l, err := w.k.LinkByName(w.cfg.Name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		l = nil
	case err != nil:
		return false, fmt.Errorf("look up %s: %w", w.cfg.Name, err)
	}
	if l != nil && w.mode == "" {
		// Left by an earlier run. A kernel device can be reused; a TUN
		// nobody serves any more carries nothing, so it is replaced.
		if l.Type() == "wireguard" && !w.cfg.ForceUserspace {
			w.mode = WireGuardKernel
		} else {
			if err := w.k.LinkDel(l); err != nil {
				return false, fmt.Errorf("delete stale %s: %w", w.cfg.Name, err)
			}
			l = nil
		}
	}
	if l != nil && w.mode == WireGuardUserspace && w.user == nil {
		l = nil
	}
	if l == nil {
		if err := w.create(); err != nil {
			return false, err
		}
		if l, err = w.k.LinkByName(w.cfg.Name); err != nil {
			return false, fmt.Errorf("look up created %s: %w", w.cfg.Name, err)
		}
		w.applied = ""
		changed = true
	}
	w.index = l.Attrs().Index
	if l.Attrs().MTU != w.cfg.MTU {
		if err := w.k.LinkSetMTU(l, w.cfg.MTU); err != nil {
			return changed, fmt.Errorf("set %s mtu %d: %w", w.cfg.Name, w.cfg.MTU, err)
		}
		changed = true
	}
	addrChanged, err := ensureOnlyAddr(w.k, l, netip.PrefixFrom(overlayIP, 32))
	if err != nil {
		return changed, err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := w.k.LinkSetUp(l); err != nil {
			return changed, fmt.Errorf("set %s up: %w", w.cfg.Name, err)
		}
		changed = true
	}
	return changed || addrChanged, nil
}

// create makes the device, kernel first. Called with mu held.
func (w *WireGuard) create() error {
	if !w.cfg.ForceUserspace {
		err := w.k.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: w.cfg.Name, MTU: w.cfg.MTU}})
		if err == nil {
			w.mode = WireGuardKernel
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTSUP) && !strings.Contains(err.Error(), "not supported") {
			return fmt.Errorf("create WireGuard device %s: %w", w.cfg.Name, err)
		}
	}
	t, err := tun.CreateTUN(w.cfg.Name, w.cfg.MTU)
	if err != nil {
		return fmt.Errorf("create TUN %s for userspace WireGuard: %w", w.cfg.Name, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	if err := dev.Up(); err != nil {
		dev.Close()
		return fmt.Errorf("start userspace WireGuard on %s: %w", w.cfg.Name, err)
	}
	w.user, w.mode = dev, WireGuardUserspace
	return nil
}

// SetPrivateKey replaces the device's key at the next AddPeers.
func (w *WireGuard) SetPrivateKey(k wgtypes.Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cfg.PrivateKey = k
	w.applied = ""
}

// configure applies c to the device, whichever mode it runs in.
func (w *WireGuard) configure(c wgtypes.Config) error {
	if w.mode == WireGuardUserspace {
		return w.user.IpcSet(uapiText(c))
	}
	client, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open wgctrl: %w", err)
	}
	defer client.Close()
	return client.ConfigureDevice(w.cfg.Name, c)
}

// uapiText renders a configuration in WireGuard's cross-platform UAPI
// "set" format, which the userspace device reads.
func uapiText(c wgtypes.Config) string {
	var b strings.Builder
	if c.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(c.PrivateKey[:]))
	}
	if c.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *c.ListenPort)
	}
	if c.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, ip := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", ip.String())
		}
	}
	return b.String()
}

// AddPeers implements Backend: the device's peers become exactly peers,
// each allowed its pod subnet (its overlay address included) and reached
// at its advertised address. Nothing is written when they already are.
func (w *WireGuard) AddPeers(peers []Peer) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	port := w.cfg.Port
	c := wgtypes.Config{PrivateKey: &w.cfg.PrivateKey, ListenPort: &port, ReplacePeers: true}
	var fp strings.Builder
	sorted := slices.Clone(peers)
	slices.SortFunc(sorted, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range sorted {
		key, err := wgtypes.NewKey(p.WGPublicKey)
		if err != nil {
			continue // validated before it gets here; never configure half a peer
		}
		pc := wgtypes.PeerConfig{
			PublicKey:         key,
			Endpoint:          &net.UDPAddr{IP: ipOf(p.Underlay), Port: w.cfg.Port},
			ReplaceAllowedIPs: true,
			AllowedIPs:        []net.IPNet{*ipNetOf(p.Subnet)},
		}
		if w.cfg.Keepalive > 0 {
			ka := w.cfg.Keepalive
			pc.PersistentKeepaliveInterval = &ka
		}
		c.Peers = append(c.Peers, pc)
		fmt.Fprintf(&fp, "%s %s %s;", key, pc.Endpoint, p.Subnet)
	}
	if w.applied == fp.String() {
		return 0, nil
	}
	if err := w.configure(c); err != nil {
		return 0, fmt.Errorf("configure %s peers: %w", w.cfg.Name, err)
	}
	w.applied = fp.String()
	return 1, nil
}

// PeerRoutes implements Backend: each peer's subnet through the device.
func (w *WireGuard) PeerRoutes(peers []Peer) []netlink.Route {
	idx := w.DeviceIndex()
	out := make([]netlink.Route, 0, len(peers))
	for _, p := range peers {
		out = append(out, netlink.Route{LinkIndex: idx, Dst: ipNetOf(p.Subnet), Scope: netlink.SCOPE_LINK,
			Protocol: RouteProtocol, Table: mainTable})
	}
	return out
}

// RemoveStale implements Backend; AddPeers already replaced the peer list.
func (w *WireGuard) RemoveStale([]Peer) (int, error) { return 0, nil }

// Teardown implements Backend.
func (w *WireGuard) Teardown() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.user != nil {
		w.user.Close() // removes the TUN device
		w.user = nil
	}
	l, err := w.k.LinkByName(w.cfg.Name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return w.k.LinkDel(l)
}

// Close stops a userspace device; the kernel device stays for the next
// run, as the VXLAN device does.
func (w *WireGuard) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.user != nil {
		w.user.Close()
		w.user = nil
	}
}
