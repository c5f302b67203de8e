// Package icmpecho sends ICMP echo requests from inside a network namespace
// through a raw socket of the caller's, for the tools that check
// reachability many times over (the test rig, the bench, podctl in compose
// rigs): a try costs a few system calls instead of starting nsenter and
// ping, which on a busy two-core machine competes with the agents being
// measured.
package icmpecho

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// lastID numbers the pingers of this process: a raw socket sees every ICMP
// packet of its namespace, so each pinger knows its replies by its own ID.
var lastID atomic.Uint32

// Pinger sends echo requests from one network namespace. It is not safe
// for concurrent use; open one per goroutine.
type Pinger struct {
	conn *icmp.PacketConn
	id   int
	seq  int
	buf  []byte
}

// Open opens a pinger in the network namespace at nsPath (such as
// /run/netns/NAME); the socket stays in that namespace, whichever the
// caller's threads are in later.
func Open(nsPath string) (*Pinger, error) {
	var conn *icmp.PacketConn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open ICMP socket in %s: %w", nsPath, err)
	}
	id := (os.Getpid() + int(lastID.Add(1))) & 0xffff
	return &Pinger{conn: conn, id: id, buf: make([]byte, 1500)}, nil
}

// Close closes the socket.
func (p *Pinger) Close() error { return p.conn.Close() }

// Ping sends one echo request to dst and waits up to timeout for its
// reply.
func (p *Pinger) Ping(dst netip.Addr, timeout time.Duration) error {
	if !dst.Is4() {
		return fmt.Errorf("ping %s: only IPv4 destinations", dst)
	}
	p.seq = (p.seq + 1) & 0xffff
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: p.seq, Data: []byte("loom echo")}}).Marshal(nil)
	if err != nil {
		return err
	}
	if err := p.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	to := &net.IPAddr{IP: dst.AsSlice()}
	if _, err := p.conn.WriteTo(req, to); err != nil {
		return fmt.Errorf("ping %s: %w", dst, err)
	}
	for {
		n, from, err := p.conn.ReadFrom(p.buf)
		if err != nil {
			return fmt.Errorf("ping %s: no reply within %s: %w", dst, timeout, err)
		}
		if p.isReply(p.buf[:n], from, to) {
			return nil
		}
	}
}

// isReply tells this pinger's reply to its latest request from the other
// ICMP packets the raw socket sees.
func (p *Pinger) isReply(b []byte, from net.Addr, to *net.IPAddr) bool {
	m, err := icmp.ParseMessage(1, b) // 1: ICMP for IPv4
	if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
		return false
	}
	e, ok := m.Body.(*icmp.Echo)
	src, isIP := from.(*net.IPAddr)
	return ok && isIP && e.ID == p.id && e.Seq == p.seq && src.IP.Equal(to.IP)
}
