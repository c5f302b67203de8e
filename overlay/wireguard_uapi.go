package overlay

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiTimeout bounds one exchange with the userspace device.
const uapiTimeout = 5 * time.Second

// uapiExchange sends one request over WireGuard's cross-platform UAPI
// (the protocol wireguard-go serves and wg(8) speaks) and returns the
// answer's key=value lines; errno != 0 is an error.
func uapiExchange(socket, request string) ([][2]string, error) {
	c, err := net.DialTimeout("unix", socket, uapiTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(uapiTimeout))
	if _, err := c.Write([]byte(request)); err != nil {
		return nil, err
	}
	var out [][2]string
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("UAPI answer line %q", line)
		}
		if k == "errno" {
			if v != "0" {
				return nil, uapiErrno(v)
			}
			return out, nil
		}
		out = append(out, [2]string{k, v})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("UAPI answer ended without errno")
}

// uapiErrno turns the errno line of a refused request into an error that
// errors.Is matches against syscall errors: wireguard-go answers with
// negative errno values (-98 for a listen port in use).
func uapiErrno(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("WireGuard device refused the request: errno %q", v)
	}
	return fmt.Errorf("WireGuard device refused the request: %w (errno %d)", syscall.Errno(max(n, -n)), n)
}

// uapiSet applies a configuration to the device behind socket.
func uapiSet(socket string, c wgtypes.Config) error {
	_, err := uapiExchange(socket, "set=1\n"+uapiText(c)+"\n")
	return err
}

// uapiGet reads the device's configuration.
func uapiGet(socket string) (*wgtypes.Device, error) {
	lines, err := uapiExchange(socket, "get=1\n\n")
	if err != nil {
		return nil, err
	}
	d := &wgtypes.Device{}
	var peer *wgtypes.Peer
	for _, kv := range lines {
		k, v := kv[0], kv[1]
		switch k {
		case "private_key":
			key, err := hexKey(v)
			if err != nil {
				return nil, err
			}
			d.PrivateKey, d.PublicKey = key, key.PublicKey()
		case "listen_port":
			d.ListenPort, _ = strconv.Atoi(v)
		case "public_key":
			key, err := hexKey(v)
			if err != nil {
				return nil, err
			}
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: key})
			peer = &d.Peers[len(d.Peers)-1]
		case "endpoint":
			if peer != nil {
				if a, err := net.ResolveUDPAddr("udp", v); err == nil {
					peer.Endpoint = a
				}
			}
		case "persistent_keepalive_interval":
			if peer != nil {
				n, _ := strconv.Atoi(v)
				peer.PersistentKeepaliveInterval = time.Duration(n) * time.Second
			}
		case "allowed_ip":
			if peer != nil {
				if _, n, err := net.ParseCIDR(v); err == nil {
					peer.AllowedIPs = append(peer.AllowedIPs, *n)
				}
			}
		}
	}
	return d, nil
}

func hexKey(s string) (wgtypes.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("UAPI key: %w", err)
	}
	return wgtypes.NewKey(b)
}

// uapiText renders a configuration in the UAPI "set" format.
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

// peerFingerprint identifies what Loom sets of a peer: endpoint,
// keepalive and allowed IPs (in any order). A wanted peer and the
// device's compare equal exactly when configuring it would change nothing.
func peerFingerprint(p wgtypes.Peer) string {
	ips := make([]string, len(p.AllowedIPs))
	for i, n := range p.AllowedIPs {
		ips[i] = n.String()
	}
	slices.Sort(ips)
	ep := ""
	if p.Endpoint != nil {
		ep = p.Endpoint.String()
	}
	return fmt.Sprintf("%s %s %s", ep, p.PersistentKeepaliveInterval, strings.Join(ips, ","))
}

// ConfigureUserspaceWireGuard applies c to the userspace device serving
// socket (a `loomd wireguard-device`); benchmarks build hand-made tunnels
// with the same implementation Loom runs.
func ConfigureUserspaceWireGuard(socket string, c wgtypes.Config) error {
	if err := waitForUAPI(socket, 10*time.Second, nil); err != nil {
		return err
	}
	return uapiSet(socket, c)
}

// waitForUAPI waits until a userspace device answers on socket, giving up
// after timeout or when its process exits (exited may be nil).
func waitForUAPI(socket string, timeout time.Duration, exited <-chan error) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := uapiGet(socket)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("userspace WireGuard did not serve %s within %s: %w", socket, timeout, err)
		}
		select {
		case err := <-exited:
			return fmt.Errorf("userspace WireGuard helper exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
