package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
)

// Iperf runs one iperf3 measurement from clientNS to dst (a server is
// started in serverNS for it) and returns Gbit/s received, and for UDP
// the loss in percent.
func Iperf(clientNS, serverNS string, dst netip.Addr, streams, secs int, udpRate string) (gbps, loss float64, err error) {
	// A server that outlives one test: retries need it to still be there.
	srv := exec.Command("nsenter", "--net=/run/netns/"+serverNS, "--", "iperf3", "-s", "-p", "5201")
	if err := srv.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	args := []string{"--net=/run/netns/" + clientNS, "--", "iperf3", "-c", dst.String(), "-p", "5201",
		"-t", fmt.Sprint(secs), "-P", fmt.Sprint(streams), "-J"}
	if udpRate != "" {
		args = append(args, "-u", "-b", udpRate)
	}
	type result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				LostPercent   float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	// A run that reports no traffic failed (the server was not up yet, or a
	// stale one answered): measure again rather than record a zero.
	var res result
	err = rig.Eventually(10*time.Second, func() error {
		out, err := exec.Command("nsenter", args...).Output()
		res = result{}
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			return fmt.Errorf("iperf3 %s -> %s: %v: %s", clientNS, dst, err, out)
		}
		if res.Error != "" || err != nil {
			return fmt.Errorf("iperf3 %s -> %s: %v %s", clientNS, dst, err, res.Error)
		}
		if res.End.SumReceived.BitsPerSecond == 0 && res.End.Sum.BitsPerSecond == 0 {
			return fmt.Errorf("iperf3 %s -> %s reported no traffic", clientNS, dst)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if udpRate != "" {
		return res.End.Sum.BitsPerSecond / 1e9, res.End.Sum.LostPercent, nil
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, 0, nil
}

// RTT measures n UDP round trips from clientNS to an echo server on dst in
// serverNS and returns p50 and p99 in microseconds.
func RTT(clientNS, serverNS string, dst netip.Addr, n int) (p50, p99 float64, err error) {
	var srv net.PacketConn
	if err := ns.WithNetNSPath("/run/netns/"+serverNS, func(ns.NetNS) error {
		var err error
		srv, err = net.ListenPacket("udp4", net.JoinHostPort(dst.String(), "7777"))
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 128)
		for {
			k, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:k], from)
		}
	}()
	var c net.Conn
	if err := ns.WithNetNSPath("/run/netns/"+clientNS, func(ns.NetNS) error {
		var err error
		c, err = net.Dial("udp4", net.JoinHostPort(dst.String(), "7777"))
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer c.Close()
	msg, buf := make([]byte, 64), make([]byte, 128)
	samples := make([]float64, 0, n)
	for i := 0; i < n+50; i++ {
		c.SetDeadline(time.Now().Add(time.Second))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := c.Read(buf); err != nil {
			continue // a lost datagram: skip it
		}
		if i >= 50 { // warm-up
			samples = append(samples, float64(time.Since(start).Nanoseconds())/1e3)
		}
	}
	if len(samples) == 0 {
		return 0, 0, fmt.Errorf("no round trip to %s succeeded", dst)
	}
	sort.Float64s(samples)
	return samples[len(samples)/2], samples[len(samples)*99/100], nil
}

// ConnRate measures TCP connections per second (connect, one byte each
// way, close) from clientNS to dst:port served in serverNS.
func ConnRate(clientNS, serverNS string, dst netip.Addr, n int) (float64, error) {
	var l net.Listener
	if err := ns.WithNetNSPath("/run/netns/"+serverNS, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", net.JoinHostPort(dst.String(), "7778"))
		return err
	}); err != nil {
		return 0, err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 1)
				c.Read(b)
				c.Write(b)
				c.Close()
			}()
		}
	}()
	var elapsed time.Duration
	err := ns.WithNetNSPath("/run/netns/"+clientNS, func(ns.NetNS) error {
		start := time.Now()
		b := make([]byte, 1)
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp4", l.Addr().String(), 2*time.Second)
			if err != nil {
				return err
			}
			c.Write(b)
			c.Read(b)
			c.Close()
		}
		elapsed = time.Since(start)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// TunnelFlowsTracked counts the connection tracking entries of node
// whose original direction goes to UDP port: the tunnel's own flows.
func TunnelFlowsTracked(node *rig.Node, port int) (int, error) {
	out, err := node.Exec("cat", "/proc/net/nf_conntrack")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[2] != "udp" {
			continue
		}
		for _, f := range fields {
			if strings.HasPrefix(f, "dport=") { // the first is the original direction's
				if f == "dport="+strconv.Itoa(port) {
					n++
				}
				break
			}
		}
	}
	return n, nil
}
