package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
	"github.com/miekg/dns"
)

// The four scenarios of the Kubernetes network model over Loom, with the
// nftables rules kube-proxy's nftables mode installs for Services.

// serveHTTPIn runs an HTTP server in a pod that answers with its name and
// the client address it sees.
func serveHTTPIn(t *testing.T, p *rig.Pod, port string) {
	t.Helper()
	l := listenIn(t, p.NS, net.JoinHostPort("0.0.0.0", port))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s", p.Name, host)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// nftApply loads a ruleset into a node's namespace with nft -f.
func nftApply(t *testing.T, n *rig.Node, ruleset string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(ruleset), 0o600); err != nil {
		t.Fatal(err)
	}
	mustExec(t, n, "nft", "-f", f)
}

// clusterIPRules is what kube-proxy's nftables mode programs for a
// ClusterIP Service: DNAT in prerouting and output, random choice among the
// endpoints, and masquerade for hairpin traffic (a pod reaching itself
// through the Service).
func clusterIPRules(vip string, port, targetPort int, proto string, backends []netip.Addr) string {
	var vmap []string
	var eps strings.Builder
	for i, b := range backends {
		vmap = append(vmap, fmt.Sprintf("%d : jump ep-%d", i, i))
		fmt.Fprintf(&eps, "  chain ep-%d {\n    ip saddr %s meta mark set 0x4000\n    meta l4proto %s dnat to %s:%d\n  }\n", i, b, proto, b, targetPort)
	}
	return fmt.Sprintf(`table ip kube-proxy {
  chain services {
    ip daddr %s meta l4proto %s th dport %d jump svc
  }
  chain svc {
    numgen random mod %d vmap { %s }
  }
%s  chain prerouting { type nat hook prerouting priority dstnat; jump services; }
  chain output { type nat hook output priority -100; jump services; }
  chain postrouting { type nat hook postrouting priority srcnat; meta mark 0x4000 masquerade; }
}
`, vip, proto, port, len(backends), strings.Join(vmap, ", "), eps.String())
}

// TestKubernetesScenarios runs, on three Loom nodes, the communication
// scenarios of the Kubernetes network model.
func TestKubernetesScenarios(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 3)
	client := addPod(t, nodes[0], "client")
	backends := []*rig.Pod{addPod(t, nodes[0], "be1"), addPod(t, nodes[1], "be2"), addPod(t, nodes[2], "be3")}
	waitAllReach(t, append([]*rig.Pod{client}, backends...), 30*time.Second)
	for _, b := range backends {
		serveHTTPIn(t, b, "8080") // for the whole test: Services and NodePorts use them
	}

	t.Run("pod to pod with payloads above the overlay MTU", func(t *testing.T) {
		dst := backends[2]
		if _, err := client.Exec("ping", "-c", "2", "-W", "2", "-s", "4000", dst.IP.String()); err != nil {
			t.Fatalf("ICMP with 4000-byte payload: %v", err)
		}
		// UDP datagrams larger than the pod MTU: fragmented, delivered.
		var ul net.PacketConn
		if err := ns.WithNetNSPath("/run/netns/"+dst.NS, func(ns.NetNS) error {
			var err error
			ul, err = net.ListenPacket("udp4", ":7000")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ul.Close()
		big := strings.Repeat("u", 6000)
		if err := ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
			c, err := net.Dial("udp4", net.JoinHostPort(dst.IP.String(), "7000"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(big))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		ul.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 9000)
		n, _, err := ul.ReadFrom(buf)
		if err != nil || n != len(big) {
			t.Fatalf("6000-byte UDP datagram: got %d bytes, %v", n, err)
		}
		// TCP bulk: 4 MiB in one stream, no black hole.
		tl := listenIn(t, dst.NS, net.JoinHostPort(dst.IP.String(), "7001"))
		got := make(chan int64, 1)
		go func() {
			c, err := tl.Accept()
			if err != nil {
				got <- -1
				return
			}
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			got <- n
		}()
		if err := ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp4", tl.Addr().String(), 3*time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = c.Write(make([]byte, 4<<20))
			c.Close()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != 4<<20 {
			t.Fatalf("TCP bulk transfer delivered %d bytes, want %d", n, 4<<20)
		}
	})

	t.Run("pod to Service ClusterIP", func(t *testing.T) {
		var ips []netip.Addr
		for _, b := range backends {
			ips = append(ips, b.IP)
		}
		for _, n := range nodes {
			nftApply(t, n, clusterIPRules("10.96.0.10", 80, 8080, "tcp", ips))
		}
		hits := map[string]int{}
		for i := 0; i < 300; i++ {
			_, body, err := rig.GetIn(client.NS, "http://10.96.0.10:80/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			name, seen, _ := strings.Cut(body, " ")
			hits[name]++
			if seen != client.IP.String() {
				t.Fatalf("%s saw the client as %s, want the client pod's %s (no SNAT on the pod-to-pod leg)", name, seen, client.IP)
			}
		}
		for _, b := range backends {
			if hits[b.Name] == 0 {
				t.Fatalf("backend %s got none of 300 requests: %v", b.Name, hits)
			}
		}
		// Hairpin: a backend reaching the Service lands on itself at times.
		self := 0
		for i := 0; i < 60; i++ {
			_, body, err := rig.GetIn(backends[0].NS, "http://10.96.0.10:80/")
			if err != nil {
				t.Fatalf("hairpin request %d: %v", i, err)
			}
			if strings.HasPrefix(body, backends[0].Name+" ") {
				self++
			}
		}
		if self == 0 {
			t.Fatal("no request from be1 through the Service landed on be1 (hairpin untested)")
		}
	})

	t.Run("external client to NodePort", func(t *testing.T) {
		outside, err := r.AddNode("outside")
		if err != nil {
			t.Fatal(err)
		}
		// Cluster policy on node1:30080 -> be2 on node2, masqueraded.
		// Local policy on node1:30081 -> be1 on node1, client address kept.
		nftApply(t, nodes[0], fmt.Sprintf(`table ip kube-proxy-nodeports {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr %[1]s tcp dport 30080 meta mark set 0x4000 dnat to %[2]s:8080
    ip daddr %[1]s tcp dport 30081 dnat to %[3]s:8080
  }
  chain postrouting { type nat hook postrouting priority srcnat; meta mark 0x4000 masquerade; }
}
`, nodes[0].Addr, backends[1].IP, backends[0].IP))
		_, body, err := rig.GetIn(outside.NS, fmt.Sprintf("http://%s:30080/", nodes[0].Addr))
		if err != nil || !strings.HasPrefix(body, "be2 ") {
			t.Fatalf("NodePort (Cluster) answered %q, %v; want be2", body, err)
		}
		_, body, err = rig.GetIn(outside.NS, fmt.Sprintf("http://%s:30081/", nodes[0].Addr))
		if err != nil || body != "be1 "+outside.Addr.String() {
			t.Fatalf("NodePort (Local) answered %q, %v; want be1 seeing the client's own %s", body, err, outside.Addr)
		}
	})

	t.Run("DNS behind a ClusterIP over UDP and TCP", func(t *testing.T) {
		dnsPod := backends[2] // on node3
		mux := dns.NewServeMux()
		mux.HandleFunc("svc.cluster.local.", func(w dns.ResponseWriter, req *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("10.96.0.77")})
			w.WriteMsg(m)
		})
		var pc net.PacketConn
		var tl net.Listener
		if err := ns.WithNetNSPath("/run/netns/"+dnsPod.NS, func(ns.NetNS) error {
			var err error
			if pc, err = net.ListenPacket("udp4", ":53"); err != nil {
				return err
			}
			tl, err = net.Listen("tcp4", ":53")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		us, ts := &dns.Server{PacketConn: pc, Handler: mux}, &dns.Server{Listener: tl, Handler: mux}
		go us.ActivateAndServe()
		go ts.ActivateAndServe()
		defer us.Shutdown()
		defer ts.Shutdown()
		for _, n := range nodes {
			nftApply(t, n, strings.ReplaceAll(clusterIPRules("10.96.0.53", 53, 53, "udp", []netip.Addr{dnsPod.IP}), "kube-proxy", "kube-proxy-dns-udp"))
			nftApply(t, n, strings.ReplaceAll(clusterIPRules("10.96.0.53", 53, 53, "tcp", []netip.Addr{dnsPod.IP}), "kube-proxy", "kube-proxy-dns-tcp"))
		}
		for _, proto := range []string{"udp", "tcp"} {
			var addrs []string
			err := ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
				c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
				m := new(dns.Msg)
				m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
				in, _, err := c.Exchange(m, "10.96.0.53:53")
				if err != nil {
					return err
				}
				for _, rr := range in.Answer {
					if a, ok := rr.(*dns.A); ok {
						addrs = append(addrs, a.A.String())
					}
				}
				return nil
			})
			if err != nil || len(addrs) != 1 || addrs[0] != "10.96.0.77" {
				t.Fatalf("DNS over %s through the ClusterIP: %v %v", proto, addrs, err)
			}
		}
	})

	t.Run("long-lived TCP stream survives agent restarts", func(t *testing.T) {
		dst := backends[1] // on node2
		l := listenIn(t, dst.NS, net.JoinHostPort(dst.IP.String(), "7100"))
		echoed := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				echoed <- err
				return
			}
			defer c.Close()
			_, err = io.Copy(c, c)
			echoed <- err
		}()
		var conn net.Conn
		if err := ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
			var err error
			conn, err = net.DialTimeout("tcp4", l.Addr().String(), 3*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rd := bufio.NewReader(conn)
		roundTrip := func(i int) error {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			msg := fmt.Sprintf("line %d\n", i)
			if _, err := conn.Write([]byte(msg)); err != nil {
				return err
			}
			got, err := rd.ReadString('\n')
			if err != nil || got != msg {
				return fmt.Errorf("echo %q: %q %v", msg, got, err)
			}
			return nil
		}
		for i := 0; i < 3; i++ {
			if err := roundTrip(i); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes[:2] {
			n.Stop(syscall.SIGKILL)
		}
		if err := roundTrip(10); err != nil {
			t.Fatalf("stream broke with the agents down: %v", err)
		}
		for _, n := range nodes[:2] {
			if err := n.Start(nodes[2]); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes[:2] {
			if err := n.WaitReady(30 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for i := 20; i < 25; i++ {
			if err := roundTrip(i); err != nil {
				t.Fatalf("stream broke after the agents came back: %v", err)
			}
		}
	})
}
