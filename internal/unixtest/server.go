// Package unixtest serves canned answers on unix sockets, for the unit
// tests of clients that talk to a local daemon (loomd's API, a WireGuard
// UAPI).
package unixtest

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// CannedServer listens on a unix socket in the test's temporary directory
// and answers each connection, once it has read the request (one read of
// up to 4 KiB, waiting 2 s at most), with answer, then closes it. What it
// read comes out of requests, which holds 4 requests nobody has taken.
func CannedServer(t testing.TB, answer string) (socket string, requests <-chan string) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "canned.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	reqs := make(chan string, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			c.SetDeadline(time.Now().Add(2 * time.Second))
			n, _ := c.Read(buf)
			reqs <- string(buf[:n])
			c.Write([]byte(answer))
			c.Close()
		}
	}()
	return socket, reqs
}
