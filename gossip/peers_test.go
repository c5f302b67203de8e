package gossip

import (
	"net/netip"
	"testing"
)

func TestLivePeerAt(t *testing.T) {
	m := &Membership{name: "self", peers: map[string]Peer{}}
	at := func(name, addr string, state PeerState) {
		m.peers[name] = Peer{Record: NodeRecord{Name: name, Underlay: netip.MustParseAddr(addr)}, State: state}
	}
	at("alive", "10.0.0.1", PeerAlive)
	at("suspect", "10.0.0.2", PeerSuspect)
	at("dead", "10.0.0.3", PeerDead)
	at("left", "10.0.0.4", PeerLeft)
	for _, c := range []struct {
		addr, want string
	}{
		{"10.0.0.1", "alive"},
		{"::ffff:10.0.0.1", "alive"},
		{"10.0.0.2", "suspect"}, // not declared dead yet
		{"10.0.0.3", ""},
		{"10.0.0.4", ""},
		{"10.0.0.9", ""},
	} {
		name, ok := m.LivePeerAt(netip.MustParseAddr(c.addr))
		if name != c.want || ok != (c.want != "") {
			t.Errorf("LivePeerAt(%s) = %q, %v; want %q", c.addr, name, ok, c.want)
		}
	}
}
