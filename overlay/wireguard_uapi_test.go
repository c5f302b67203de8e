package overlay

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/internal/unixtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestUAPISetAndGet(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	peer, _ := wgtypes.GeneratePrivateKey()
	port := 51820
	ka := 25 * time.Second
	_, subnet, _ := net.ParseCIDR("10.244.3.0/24")
	cfg := wgtypes.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true, Peers: []wgtypes.PeerConfig{{
		PublicKey: peer.PublicKey(), Endpoint: &net.UDPAddr{IP: net.IPv4(10, 200, 0, 2), Port: port},
		PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{*subnet},
	}}}
	sock, reqs := unixtest.CannedServer(t, "errno=0\n\n")
	if err := uapiSet(sock, cfg); err != nil {
		t.Fatal(err)
	}
	req := <-reqs
	for _, want := range []string{"set=1\n", "listen_port=51820\n", "replace_peers=true\n", "endpoint=10.200.0.2:51820\n",
		"persistent_keepalive_interval=25\n", "allowed_ip=10.244.3.0/24\n"} {
		if !strings.Contains(req, want) {
			t.Errorf("set request lacks %q:\n%s", want, req)
		}
	}
	if !strings.HasSuffix(req, "\n\n") {
		t.Error("set request not terminated by an empty line")
	}

	// What the device answers to get is what the fingerprint of the same
	// configuration expects: applying it again is a no-op.
	answer := uapiText(cfg) + "last_handshake_time_sec=0\ntx_bytes=0\nerrno=0\n\n"
	answer = strings.Replace(answer, "replace_peers=true\n", "", 1)
	answer = strings.Replace(answer, "replace_allowed_ips=true\n", "", 1)
	sock2, _ := unixtest.CannedServer(t, answer)
	dev, err := uapiGet(sock2)
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Peers) != 1 || dev.PrivateKey != priv || dev.ListenPort != port {
		t.Fatalf("device = %+v", dev)
	}
	want := peerFingerprint(wgtypes.Peer{Endpoint: cfg.Peers[0].Endpoint, PersistentKeepaliveInterval: ka, AllowedIPs: []net.IPNet{*subnet}})
	if got := peerFingerprint(dev.Peers[0]); got != want || dev.Peers[0].PublicKey != peer.PublicKey() {
		t.Fatalf("peer as read back: %s, want %s", got, want)
	}

	sock3, _ := unixtest.CannedServer(t, "errno=22\n\n")
	if err := uapiSet(sock3, cfg); err == nil || !strings.Contains(err.Error(), "errno 22") {
		t.Fatalf("refused set: err = %v", err)
	}
	// wireguard-go's answer when the listen port is taken.
	sock4, _ := unixtest.CannedServer(t, "errno=-98\n\n")
	if err := uapiSet(sock4, cfg); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("port in use: err = %v, want EADDRINUSE", err)
	}
}

func TestPeerFingerprintIgnoresOrder(t *testing.T) {
	_, a, _ := net.ParseCIDR("10.244.1.0/24")
	_, b, _ := net.ParseCIDR("10.244.2.0/24")
	p1 := wgtypes.Peer{AllowedIPs: []net.IPNet{*a, *b}}
	p2 := wgtypes.Peer{AllowedIPs: []net.IPNet{*b, *a}}
	if peerFingerprint(p1) != peerFingerprint(p2) {
		t.Fatal("allowed IP order changes the fingerprint")
	}
	p2.AllowedIPs = p2.AllowedIPs[:1]
	if peerFingerprint(p1) == peerFingerprint(p2) {
		t.Fatal("a missing allowed IP does not change the fingerprint")
	}
}
