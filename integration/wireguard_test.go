package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
	"golang.org/x/sys/unix"
)

// TestWireGuardBackend runs a fabric on the WireGuard backend (userspace
// here: this kernel has no module) and proves what users of meshes over
// the internet need: pods reach pods, nothing of theirs crosses the
// underlay in clear, only WireGuard and gossip do, forged packets reach
// nothing, a VXLAN node is refused, and restarts recover.
func TestWireGuardBackend(t *testing.T) {
	r := newRig(t, "--backend", "wireguard")
	nodes := startNodes(t, r, 3)
	var pods []*rig.Pod
	for _, n := range nodes {
		for j := 1; j <= 2; j++ {
			pods = append(pods, addPod(t, n, fmt.Sprintf("%s-wg%d", n.Name, j)))
		}
	}
	waitAllReach(t, pods, 30*time.Second)

	t.Run("status names the backend and its mode", func(t *testing.T) {
		st, err := nodes[0].Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Backend != "wireguard (userspace)" && st.Node.Backend != "wireguard (kernel)" {
			t.Fatalf("backend = %q", st.Node.Backend)
		}
		for _, p := range st.Peers {
			if !p.Programmed || p.Backend != "wireguard" {
				t.Fatalf("peer %+v not programmed over wireguard", p)
			}
		}
	})

	t.Run("pod traffic is encrypted on the underlay", func(t *testing.T) {
		marker := []byte("LOOM-SECRET-MARKER-7f3a9c")
		frames := captureSwitch(t, r.Switch, func() {
			client, server := pods[0], pods[3] // node1 -> node2
			l := listenIn(t, server.NS, net.JoinHostPort(server.IP.String(), "9100"))
			done := make(chan []byte, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- nil
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var got bytes.Buffer
				buf := make([]byte, 4096)
				for got.Len() < 200*len(marker) {
					n, err := c.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						break
					}
				}
				done <- got.Bytes()
			}()
			err := ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
				c, err := net.DialTimeout("tcp4", l.Addr().String(), 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write(bytes.Repeat(marker, 200))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := <-done; !bytes.Contains(got, marker) {
				t.Fatal("the server pod did not receive the stream")
			}
		})
		if len(frames) == 0 {
			t.Fatal("captured nothing on the underlay switch")
		}
		nodeAddr := map[netip.Addr]bool{}
		for _, n := range nodes {
			nodeAddr[n.Addr] = true
		}
		wgPackets := 0
		for _, f := range frames {
			if bytes.Contains(f, marker) {
				t.Fatal("the marker crossed the underlay in clear")
			}
			src, dst, proto, sport, dport, ok := parseIPv4(f)
			if !ok || !nodeAddr[src] || !nodeAddr[dst] {
				continue
			}
			switch {
			case proto == unix.IPPROTO_UDP && (sport == 51820 || dport == 51820):
				wgPackets++
			case (proto == unix.IPPROTO_UDP || proto == unix.IPPROTO_TCP) && (sport == 7946 || dport == 7946):
				// gossip, encrypted by memberlist's keyring
			default:
				t.Fatalf("unexpected underlay packet between nodes %s -> %s proto %d ports %d -> %d", src, dst, proto, sport, dport)
			}
		}
		if wgPackets == 0 {
			t.Fatal("no WireGuard packets seen: the stream did not go through the tunnel")
		}
	})

	t.Run("forged packets to the WireGuard port reach nothing", func(t *testing.T) {
		outsider, err := r.AddNode("outsider")
		if err != nil {
			t.Fatal(err)
		}
		target := pods[0]
		got := make(chan struct{}, 1)
		var pc net.PacketConn
		err = ns.WithNetNSPath("/run/netns/"+target.NS, func(ns.NetNS) error {
			var err error
			pc, err = net.ListenPacket("udp4", ":9200")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 2048)
			if _, _, err := pc.ReadFrom(buf); err == nil {
				got <- struct{}{}
			}
		}()
		// WireGuard messages of every type with garbage bodies, and a plain
		// payload, all addressed to node1's WireGuard port.
		err = ns.WithNetNSPath("/run/netns/"+outsider.NS, func(ns.NetNS) error {
			c, err := net.Dial("udp4", net.JoinHostPort(nodes[0].Addr.String(), "51820"))
			if err != nil {
				return err
			}
			defer c.Close()
			for i := 0; i < 200; i++ {
				msg := make([]byte, 148)
				binary.LittleEndian.PutUint32(msg, uint32(1+i%4))
				copy(msg[16:], target.IP.AsSlice())
				copy(msg[32:], "forged payload for port 9200")
				c.Write(msg)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			t.Fatal("a forged packet reached the pod")
		case <-time.After(2 * time.Second):
		}
		waitAllReach(t, pods, 10*time.Second)
	})

	t.Run("a node on another backend is refused, not half-connected", func(t *testing.T) {
		vx, err := r.AddNode("vxlannode", "--backend", "vxlan")
		if err != nil {
			t.Fatal(err)
		}
		if err := vx.Start(nodes[0]); err != nil {
			t.Fatal(err)
		}
		if err := vx.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		waitRefused(t, nodes[0], "vxlannode", "runs backend vxlan, this node runs wireguard")
		st, err := vx.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Programmed {
				t.Fatalf("the vxlan node programmed wireguard peer %s", p.Name)
			}
		}
		if !strings.Contains(rig.Tail(nodes[0].LogPath(), 400), "refusing peer: it cannot be connected to this node") {
			t.Fatal("no error logged for the refused node")
		}
		if err := vx.Stop(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("key rotation: peers pick up the new key", func(t *testing.T) {
		before, err := nodes[0].Status()
		if err != nil {
			t.Fatal(err)
		}
		// Pings every 100 ms across the rotation; the longest run of
		// losses is reported (a measurement, not a pass criterion).
		stop := make(chan struct{})
		gapDone := make(chan time.Duration, 1)
		go func() {
			var worst, cur time.Duration
			for {
				select {
				case <-stop:
					gapDone <- max(worst, cur)
					return
				default:
				}
				start := time.Now()
				if rig.Ping(pods[2].NS, pods[0].IP) != nil {
					cur += time.Since(start)
				} else {
					worst, cur = max(worst, cur), 0
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		res, err := nodes[0].Client().RotateWireGuardKey(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.PublicKey == before.Node.WireGuardKey || res.PublicKey == "" {
			t.Fatalf("rotate returned %q, the key before was %q", res.PublicKey, before.Node.WireGuardKey)
		}
		err = rig.Eventually(20*time.Second, func() error {
			for _, n := range nodes[1:] {
				st, err := n.Status()
				if err != nil {
					return err
				}
				for _, p := range st.Peers {
					if p.Name == nodes[0].Name && p.WireGuardKey != res.PublicKey {
						return fmt.Errorf("%s still has key %s for %s", n.Name, p.WireGuardKey, p.Name)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		waitAllReach(t, pods, 20*time.Second)
		close(stop)
		t.Logf("longest connectivity gap during rotation: %s", <-gapDone)
		// The new key survives a restart of the agent.
		if err := nodes[0].Stop(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := nodes[0].Start(nodes[1]); err != nil {
			t.Fatal(err)
		}
		if err := nodes[0].WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		st, err := nodes[0].Status()
		if err != nil || st.Node.WireGuardKey != res.PublicKey {
			t.Fatalf("after restart key = %q (%v), want %q", st.Node.WireGuardKey, err, res.PublicKey)
		}
		waitAllReach(t, pods, 30*time.Second)
	})

	t.Run("agent restart: pods reach each other again", func(t *testing.T) {
		if err := nodes[1].Stop(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := nodes[1].Start(nodes[0]); err != nil {
			t.Fatal(err)
		}
		if err := nodes[1].WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		waitAllReach(t, pods, 30*time.Second)
	})

	t.Run("leave removes the device and ends the userspace helper", func(t *testing.T) {
		n := nodes[2]
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		userspace := st.Node.Backend == "wireguard (userspace)"
		helper := "wireguard-device --name loom-wg --mtu [0-9]+ --socket " + filepath.Join(n.Dir, "state")
		if pids, err := processesMatching(helper); err != nil {
			t.Fatal(err)
		} else if userspace && pids == "" {
			t.Fatalf("no userspace helper running for %s before leave", n.Name)
		}
		if _, err := rig.Run(filepath.Join(binaries(t), "loomctl"), "--socket", n.Socket, "leave"); err != nil {
			t.Fatal(err)
		}
		n.Stop(syscall.SIGTERM)
		err = rig.Eventually(10*time.Second, func() error {
			if _, err := n.Exec("ip", "link", "show", "loom-wg"); err == nil {
				return fmt.Errorf("loom-wg still exists on %s", n.Name)
			}
			pids, err := processesMatching(helper)
			if err != nil {
				return err
			}
			if pids != "" {
				return fmt.Errorf("helper still running: pid %s", pids)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// processesMatching returns the pids of processes whose command line
// matches pattern, or "" when none does. pgrep exits 1 for "no match"; any
// other failure (pgrep missing, a bad pattern) is an error, so a check that
// expects no helper cannot pass just because pgrep did not run.
func processesMatching(pattern string) (string, error) {
	out, err := rig.Run("pgrep", "-f", pattern)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// captureSwitch records every frame crossing the underlay switch while
// during runs (an AF_PACKET socket in the switch namespace sees each
// frame on each bridge port).
func captureSwitch(t *testing.T, switchNS string, during func()) [][]byte {
	t.Helper()
	var fd int
	err := ns.WithNetNSPath("/run/netns/"+switchNS, func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	tv := unix.Timeval{Usec: 100000}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	var mu sync.Mutex
	var frames [][]byte
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n <= 0 {
				continue
			}
			mu.Lock()
			frames = append(frames, append([]byte(nil), buf[:n]...))
			mu.Unlock()
		}
	}()
	during()
	time.Sleep(200 * time.Millisecond) // frames in flight; the assertion does not depend on it
	close(stop)
	<-done
	unix.Close(fd)
	mu.Lock()
	defer mu.Unlock()
	return frames
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseIPv4 reads addresses, protocol and ports of an Ethernet frame.
func parseIPv4(f []byte) (src, dst netip.Addr, proto byte, sport, dport uint16, ok bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl+4 {
		return
	}
	src, _ = netip.AddrFromSlice(ip[12:16])
	dst, _ = netip.AddrFromSlice(ip[16:20])
	proto = ip[9]
	sport = binary.BigEndian.Uint16(ip[ihl:])
	dport = binary.BigEndian.Uint16(ip[ihl+2:])
	return src, dst, proto, sport, dport, true
}

// TestWireGuardBehindNAT puts one node in a "cloud" segment behind a
// router that masquerades it and forwards only the gossip and WireGuard
// ports of its public address, as a cloud NAT gateway would; the node
// advertises that public address, which it does not own. All pods must
// reach all pods.
func TestWireGuardBehindNAT(t *testing.T) {
	behindNAT(t, rig.Options{}, 51820, "--backend", "wireguard", "--wireguard-keepalive", "25s")
}

// TestWireGuardBehindNATIPv6 is the same over an IPv6 underlay, the
// router translating IPv6 addresses (NAT66).
func TestWireGuardBehindNATIPv6(t *testing.T) {
	behindNAT(t, rig.Options{IPv6Underlay: true}, 51820, "--backend", "wireguard", "--wireguard-keepalive", "25s")
}

// TestVXLANBehindNAT is the same over VXLAN (a cloud's 1:1 NAT, as an
// elastic address gives): the node does not own the address it
// advertises, so its tunnel must send from the address it does own.
func TestVXLANBehindNAT(t *testing.T) { behindNAT(t, rig.Options{}, 4789) }

// TestVXLANBehindNATIPv6 is the same over an IPv6 underlay, the router
// translating IPv6 addresses (NAT66).
func TestVXLANBehindNATIPv6(t *testing.T) {
	behindNAT(t, rig.Options{IPv6Underlay: true}, 4789)
}

func behindNAT(t *testing.T, opts rig.Options, tunnelPort int, agentArgs ...string) {
	opts.AgentArgs = append(opts.AgentArgs, agentArgs...)
	r := newRigWith(t, opts)
	nodes := startNodes(t, r, 2)
	cloud, err := r.AddRoutedNode("cloud")
	if err != nil {
		t.Fatal(err)
	}
	router := r.Prefix + "-rt"
	public := r.RouterAddr().String()
	family := "ip" // the nft table family, and the address match's keyword
	if opts.IPv6Underlay {
		family = "ip6"
	}
	nat := fmt.Sprintf(`table %[5]s nat {
	chain prerouting {
		type nat hook prerouting priority dstnat;
		iifname "eth0" %[5]s daddr %[1]s udp dport { 7946, %[3]d } dnat to %[2]s
		iifname "eth0" %[5]s daddr %[1]s tcp dport 7946 dnat to %[2]s
	}
	chain postrouting {
		type nat hook postrouting priority srcnat;
		oifname "eth0" %[5]s saddr %[4]s masquerade
	}
}
table %[5]s filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "eth1" accept
		ct status dnat accept
	}
}
`, public, cloud.Addr, tunnelPort, r.RoutedPrefix(), family)
	if out, err := rig.Run("ip", "netns", "exec", router, "sh", "-c", "nft -f - <<'EOF'\n"+nat+"EOF\n"); err != nil {
		t.Fatalf("program the NAT router: %v: %s", err, out)
	}
	// The nodes on the switch know the cloud node only by its public
	// address: no route into the cloud segment.
	for _, n := range nodes {
		if _, err := rig.Run("ip", "-n", n.NS, "route", "del", r.RoutedPrefix().String()); err != nil {
			t.Fatal(err)
		}
	}
	cloud.Args = append(cloud.Args, "--advertise-addr", public)
	if err := cloud.Start(nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := cloud.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, r.Nodes())
	var pods []*rig.Pod
	for _, n := range append(nodes, cloud) {
		pods = append(pods, addPod(t, n, n.Name+"-natpod"))
	}
	waitAllReach(t, pods, 30*time.Second)
	st, err := nodes[0].Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if p.Name == "cloud" && p.Underlay != public {
			t.Fatalf("cloud node known at %s, want its public %s", p.Underlay, public)
		}
	}
}

// TestWireGuardPortInUse: something else on the node holds the WireGuard
// port (another WireGuard, a leftover). The node is not ready and says
// which port and flag; once the port is free it becomes ready by itself.
func TestWireGuardPortInUse(t *testing.T) {
	r := newRig(t, "--backend", "wireguard")
	first := startNodes(t, r, 1)[0]
	n, err := r.AddNode("crowded")
	if err != nil {
		t.Fatal(err)
	}
	holder, err := rig.ListenPacketIn(n.NS, "0.0.0.0:51820")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := n.Start(first); err != nil {
		t.Fatal(err)
	}
	waitNotReady(t, n, "UDP port 51820 is in use on this node (another WireGuard?): give Loom another --wireguard-port")
	holder.Close()
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitAllReach(t, []*rig.Pod{addPod(t, first, "a"), addPod(t, n, "b")}, 30*time.Second)
}
