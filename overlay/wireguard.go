package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
	// Helper is the command that runs a userspace device (loomd's
	// "wireguard-device"); it gets --name, --mtu and --socket appended.
	Helper []string
	// Socket is where the userspace device serves the UAPI.
	Socket string
	// HelperLog receives the helper's output.
	HelperLog string
}

// WireGuard routes each peer's pod subnet through one WireGuard device,
// encrypted and authenticated by the peers' keys. Both modes are read and
// configured as wgtypes: wgctrl for the kernel device, the UAPI socket
// of the helper process for the userspace one. The userspace device runs
// in its own long-lived process, so an agent restart adopts it and pod
// traffic never stops.
type WireGuard struct {
	k   Kernel
	cfg WireGuardConfig

	// mu guards the fields below.
	mu    sync.Mutex
	mode  string
	index int
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
	l, changed, err := ensureLink(w.k, w.cfg.Name, w.adoptable, w.create)
	if err != nil {
		return false, err
	}
	w.index = l.Attrs().Index
	linkChanged, err := ensureDeviceUp(w.k, l, w.cfg.MTU, overlayIP)
	return changed || linkChanged, err
}

// adoptable reports whether an existing device can be used as it is: a
// kernel WireGuard device, or a TUN whose helper answers on the socket.
// Called with mu held; sets the mode.
func (w *WireGuard) adoptable(l netlink.Link) bool {
	if l.Type() == "wireguard" && !w.cfg.ForceUserspace {
		w.mode = WireGuardKernel
		return true
	}
	if _, err := uapiGet(w.cfg.Socket); err == nil {
		w.mode = WireGuardUserspace
		return true
	}
	return false
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
	if len(w.cfg.Helper) == 0 {
		return errors.New("no WireGuard kernel module and no userspace helper configured")
	}
	args := append(slices.Clone(w.cfg.Helper[1:]), "--name", w.cfg.Name, "--mtu", fmt.Sprint(w.cfg.MTU), "--socket", w.cfg.Socket)
	cmd := exec.Command(w.cfg.Helper[0], args...)
	if w.cfg.HelperLog != "" {
		f, err := os.OpenFile(w.cfg.HelperLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open %s: %w", w.cfg.HelperLog, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	// Its own session: it must outlive this agent, whatever signal the
	// agent's process group gets.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start userspace WireGuard helper: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reap it whenever it ends
	if err := waitForUAPI(w.cfg.Socket, 10*time.Second, exited); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("%w (see %s)", err, w.cfg.HelperLog)
	}
	w.mode = WireGuardUserspace
	return nil
}

// device reads the device's configuration, whichever mode it runs in.
func (w *WireGuard) device() (*wgtypes.Device, error) {
	if w.mode == WireGuardUserspace {
		return uapiGet(w.cfg.Socket)
	}
	client, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	defer client.Close()
	return client.Device(w.cfg.Name)
}

// configure applies c to the device, whichever mode it runs in.
func (w *WireGuard) configure(c wgtypes.Config) error {
	if w.mode == WireGuardUserspace {
		return uapiSet(w.cfg.Socket, c)
	}
	client, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open wgctrl: %w", err)
	}
	defer client.Close()
	return client.ConfigureDevice(w.cfg.Name, c)
}

// AddPeers implements Backend: the device gets this node's key and port,
// and each peer its pod subnet (its overlay address included) as allowed
// IPs and its advertised address as endpoint. It only adds and updates:
// removing is RemoveStale's, which a restarted agent that has not heard
// from its peers yet does not run. The device is read first and nothing is
// written when it already holds all of this, so a restarted agent adopts a
// running device without a single write.
func (w *WireGuard) AddPeers(peers []Peer) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	have, err := w.device()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", w.cfg.Name, err)
	}
	current := map[wgtypes.Key]string{}
	for _, p := range have.Peers {
		current[p.PublicKey] = peerFingerprint(p)
	}
	port := w.cfg.Port
	c := wgtypes.Config{}
	if have.PrivateKey != w.cfg.PrivateKey || have.ListenPort != port {
		c.PrivateKey, c.ListenPort = &w.cfg.PrivateKey, &port
	}
	for _, p := range peers {
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
		want := wgtypes.Peer{PublicKey: key, Endpoint: pc.Endpoint, PersistentKeepaliveInterval: w.cfg.Keepalive, AllowedIPs: pc.AllowedIPs}
		if current[key] != peerFingerprint(want) {
			c.Peers = append(c.Peers, pc)
		}
	}
	if c.PrivateKey == nil && len(c.Peers) == 0 {
		return 0, nil
	}
	if err := w.configure(c); err != nil {
		if c.ListenPort != nil && errors.Is(err, syscall.EADDRINUSE) {
			return 0, fmt.Errorf("configure %s: UDP port %d is in use on this node (another WireGuard?): give Loom another --wireguard-port, or stop what holds it: %w", w.cfg.Name, port, err)
		}
		return 0, fmt.Errorf("configure %s peers: %w", w.cfg.Name, err)
	}
	return len(c.Peers) + btoi(c.PrivateKey != nil), nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// PeerRoutes implements Backend: each peer's subnet through the device.
func (w *WireGuard) PeerRoutes(peers []Peer) []netlink.Route {
	idx := w.DeviceIndex()
	out := make([]netlink.Route, 0, len(peers))
	for _, p := range peers {
		out = append(out, netlink.Route{LinkIndex: idx, Dst: ipNetOf(p.Subnet), Scope: netlink.SCOPE_LINK,
			Protocol: RouteProtocol, Table: mainTable, MTU: p.RouteMTU})
	}
	return out
}

// RemoveStale implements Backend: device peers whose key belongs to no
// current peer (departed nodes, rotated keys) are removed.
func (w *WireGuard) RemoveStale(peers []Peer) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	have, err := w.device()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", w.cfg.Name, err)
	}
	keep := map[wgtypes.Key]bool{}
	for _, p := range peers {
		if k, err := wgtypes.NewKey(p.WGPublicKey); err == nil {
			keep[k] = true
		}
	}
	var c wgtypes.Config
	for _, p := range have.Peers {
		if !keep[p.PublicKey] {
			c.Peers = append(c.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	if len(c.Peers) == 0 {
		return 0, nil
	}
	if err := w.configure(c); err != nil {
		return 0, fmt.Errorf("remove stale %s peers: %w", w.cfg.Name, err)
	}
	return len(c.Peers), nil
}

// Teardown implements Backend. Deleting the device also ends a
// userspace helper, which exits when its TUN goes away.
func (w *WireGuard) Teardown() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return deleteLink(w.k, w.cfg.Name)
}

// SetPrivateKey makes the next AddPeers put k on the device.
func (w *WireGuard) SetPrivateKey(k wgtypes.Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cfg.PrivateKey = k
}
