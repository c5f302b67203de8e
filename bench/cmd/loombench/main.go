// Command loombench runs Loom's benchmarks (make bench, make bench-short):
// every figure is measured against its baseline in the same run, in
// alternating rounds, and reported as min/median/max in
// bench/results.json and bench/results.md. It asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/loomnet/loom/bench"
	"github.com/loomnet/loom/integration/rig"
)

func main() {
	short := flag.Bool("short", false, "reduced run (< 5 minutes): fewer rounds, shorter transfers, 10 nodes only")
	out := flag.String("out", "bench", "directory for results.json and results.md")
	flag.StringVar(&only, "only", "", "run only these sections, comma-separated: dataplane, cni, scale, offload, profile, policy, convergence")
	rounds := flag.Int("rounds", 3, "alternating rounds of the dataplane, cni, offload and profile sections; more narrow the medians on a noisy machine (-short: 2 unless given)")
	flag.Parse()
	if *short && !flagGiven("rounds") {
		// Three rounds of every data plane path alone take bench-short
		// past its 5 minutes.
		*rounds = 2
	}
	if *rounds < 1 || *rounds > 100 {
		fmt.Fprintf(os.Stderr, "loombench: -rounds %d: want 1 to 100\n", *rounds)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "loombench: must run as root (network namespaces)")
		os.Exit(1)
	}
	if err := run(*short, *out, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "loombench:", err)
		os.Exit(1)
	}
}

func flagGiven(name string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// only lists the sections to run; empty runs all.
var only string

func section(name string) bool {
	if only == "" {
		return true
	}
	for _, s := range strings.Split(only, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

var started = time.Now()

// logf prints a progress line with the time since the run started, so a
// slow section shows in the log.
func logf(format string, a ...any) {
	fmt.Printf("bench: %4.0fs "+format+"\n", append([]any{time.Since(started).Seconds()}, a...)...)
}

func run(short bool, out string, rounds int) error {
	mode, secs, cniCount, sizes, window := "full", 3, 100, []int{10, 25, 50}, 10*time.Second
	if short {
		mode, secs, cniCount, sizes, window = "short", 2, 30, []int{10}, 5*time.Second
	}
	if os.Getenv(rig.RaceEnv) == "1" {
		// Race-detector builds run several times slower: every figure
		// would be about the detector, not Loom.
		return fmt.Errorf("%s=1 would build the binaries with the race detector; benchmarks measure release builds, unset it", rig.RaceEnv)
	}
	rep := bench.NewReport(mode, rounds)
	bin, err := os.MkdirTemp("", "loom-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	logf("building binaries and reference plugins")
	if err := rig.Build(".", bin); err != nil {
		return err
	}
	if err := rig.BuildReferencePlugins(".", filepath.Join(bin, "ref")); err != nil {
		return err
	}
	if section("dataplane") {
		if err := dataPlane(rep, bin, rounds, secs); err != nil {
			return err
		}
	}
	if section("cni") {
		if err := cniBench(rep, bin, rounds, cniCount); err != nil {
			return err
		}
	}
	if section("scale") {
		if err := scaleBench(rep, bin, short); err != nil {
			return err
		}
	}
	// bench-short stays under 5 minutes without the option sweep; -only
	// offload runs it anyway.
	if section("offload") && (!short || only != "") {
		if err := offloadBench(rep, bin, rounds, secs); err != nil {
			return err
		}
	}
	if section("profile") && (!short || only != "") {
		if err := profileBench(rep, bin, rounds, secs); err != nil {
			return err
		}
	}
	if section("policy") {
		if err := policyBench(rep, bin); err != nil {
			return err
		}
	}
	if section("convergence") {
		if err := convergenceBench(rep, bin, sizes, window); err != nil {
			return err
		}
	}
	rep.Note("The namespace rig has no wire: throughput is CPU-bound and noisy (±10%% between runs); compare ratios within one run, never single figures.")
	rep.Note("WireGuard runs in userspace here (no kernel module): Loom's backend and the hand-made tunnel both use loomd's wireguard-go helper.")
	rep.Note("VXLAN option sweep (offload section) and kernel profile (profile section): make bench only, or -only offload,profile.")
	return rep.Write(out)
}

// dataPlane measures throughput, loss, RTT and connection rate of Loom's
// pod-to-pod path against the underlay, a hand-made kernel VXLAN tunnel
// and pod-to-pod on one node.
func dataPlane(rep *bench.Report, bin string, rounds, secs int) error {
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	ctx := context.Background()
	loom, lp, err := fabric(r, "node", nil)
	if err != nil {
		return err
	}
	pA, pB := lp[0], lp[1]
	pC, err := loom[0].AddPod(ctx, "c")
	if err != nil {
		return err
	}
	// Reverse-path filtering instead of nftables set lookups for
	// anti-spoofing, to measure which costs less.
	_, rp, err := fabric(r, "rpf", []string{"--pod-antispoof", "rp_filter"})
	if err != nil {
		return err
	}
	// Nothing in Loom's table that needs connection tracking: Loom's own
	// rules against the bare hand-made tunnel.
	_, nc, err := fabric(r, "nomasq", noConntrackFlags)
	if err != nil {
		return err
	}
	_, dp, err := fabric(r, "direct", []string{"--direct-routing"})
	if err != nil {
		return err
	}
	// 100 NetworkPolicies selecting both pods; the last one allows them.
	polDir, err := os.MkdirTemp("", "loom-bench-policies-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(polDir)
	if err := os.WriteFile(filepath.Join(polDir, "bench.yaml"), []byte(bench.PolicyFile(100)), 0o644); err != nil {
		return err
	}
	_, pp, err := fabric(r, "policy", []string{"--policy-dir", polDir})
	if err != nil {
		return err
	}
	_, wgp, err := fabric(r, "wg", []string{"--backend", "wireguard"})
	if err != nil {
		return err
	}
	// The same fabric over an IPv6 underlay, whose VXLAN header is 20
	// bytes longer: a rig of its own, as a rig's switch has one family.
	r6, err := rig.New(rig.Options{BinDir: bin, Logf: logf, IPv6Underlay: true})
	if err != nil {
		return err
	}
	defer r6.Close()
	_, v6p, err := fabric(r6, "v6", nil)
	if err != nil {
		return err
	}
	hw, err := handNodes(r, "handwg")
	if err != nil {
		return err
	}
	handWG, err := bench.BuildHandWireGuard(hw, filepath.Join(bin, "loomd"), r.Dir, 1420)
	if err != nil {
		return err
	}
	hand, err := handBaseline(r, "hand", bench.BuildHandTunnel)
	if err != nil {
		return err
	}
	handCT, err := handBaseline(r, "handct", bench.WithConntrack(bench.BuildHandTunnel))
	if err != nil {
		return err
	}
	handDirect, err := handBaseline(r, "handdirect", bench.BuildHandDirect)
	if err != nil {
		return err
	}
	handDirectCT, err := handBaseline(r, "handdirectct", bench.WithConntrack(bench.BuildHandDirect))
	if err != nil {
		return err
	}
	for _, c := range []struct {
		ns  string
		dst netip.Addr
	}{{pA.NS, pB.IP}, {pA.NS, pC.IP}, {rp[0].NS, rp[1].IP}, {nc[0].NS, nc[1].IP}, {dp[0].NS, dp[1].IP}, {pp[0].NS, pp[1].IP}, {wgp[0].NS, wgp[1].IP}, {v6p[0].NS, v6p[1].IP}, {handWG[0].NS, handWG[1].IP}, {hand[0].NS, hand[1].IP}, {handCT[0].NS, handCT[1].IP}, {handDirect[0].NS, handDirect[1].IP}, {handDirectCT[0].NS, handDirectCT[1].IP}, {loom[0].NS, loom[1].Addr}} {
		if err := rig.Eventually(30*time.Second, func() error { return rig.Ping(c.ns, c.dst) }); err != nil {
			return err
		}
	}
	type path struct {
		name           string
		client, server string
		dst            netip.Addr
	}
	paths := []path{
		{"Loom pod→pod", pA.NS, pB.NS, pB.IP},
		{"hand-made VXLAN pod→pod", hand[0].NS, hand[1].NS, hand[1].IP},
		{handCTName, handCT[0].NS, handCT[1].NS, handCT[1].IP},
		{"underlay node→node", loom[0].NS, loom[1].NS, loom[1].Addr},
		{"same-node pod→pod", pA.NS, pC.NS, pC.IP},
		{"Loom pod→pod, rp_filter anti-spoofing", rp[0].NS, rp[1].NS, rp[1].IP},
		{noConntrackName, nc[0].NS, nc[1].NS, nc[1].IP},
		{"Loom pod→pod, direct routing", dp[0].NS, dp[1].NS, dp[1].IP},
		{"hand-made direct route pod→pod", handDirect[0].NS, handDirect[1].NS, handDirect[1].IP},
		{handDirectCTName, handDirectCT[0].NS, handDirectCT[1].NS, handDirectCT[1].IP},
		{"Loom pod→pod, 100 policies selecting the pods", pp[0].NS, pp[1].NS, pp[1].IP},
		{"Loom pod→pod, WireGuard backend", wgp[0].NS, wgp[1].NS, wgp[1].IP},
		{ipv6Name, v6p[0].NS, v6p[1].NS, v6p[1].IP},
		{"hand-made WireGuard pod→pod", handWG[0].NS, handWG[1].NS, handWG[1].IP},
	}
	for round := 0; round < rounds; round++ {
		logf("data plane round %d/%d", round+1, rounds)
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			for _, streams := range []int{1, 4} {
				g, _, err := bench.Iperf(p.client, p.server, p.dst, streams, secs, "")
				if err != nil {
					return err
				}
				rep.Add(fmt.Sprintf("TCP %d stream(s): %s", streams, p.name), "Gbit/s", g)
			}
			if p.name == paths[0].name || p.name == paths[1].name {
				_, loss, err := bench.Iperf(p.client, p.server, p.dst, 1, secs, "1G")
				if err != nil {
					return err
				}
				rep.Add("UDP 1 Gbit/s loss: "+p.name, "%", loss)
			}
			if rtt := map[string]bool{paths[0].name: true, paths[1].name: true, handCTName: true, noConntrackName: true, paths[3].name: true, "Loom pod→pod, 100 policies selecting the pods": true,
				"Loom pod→pod, WireGuard backend": true, "hand-made WireGuard pod→pod": true, ipv6Name: true}; rtt[p.name] {
				p50, p99, err := bench.RTT(p.client, p.server, p.dst, 2000)
				if err != nil {
					return err
				}
				rep.Add("RTT p50: "+p.name, "µs", p50)
				rep.Add("RTT p99: "+p.name, "µs", p99)
				rate, err := bench.ConnRate(p.client, p.server, p.dst, 300)
				if err != nil {
					return err
				}
				rep.Add("TCP connect+close rate: "+p.name, "conn/s", rate)
			}
		}
	}
	for _, s := range []string{"1", "4"} {
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod", "TCP "+s+" stream(s): hand-made VXLAN pod→pod", "≥ 0.97")
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod", "TCP "+s+" stream(s): "+handCTName, "")
		rep.Compare("TCP "+s+" stream(s): "+handCTName, "TCP "+s+" stream(s): hand-made VXLAN pod→pod", "")
		rep.Compare("TCP "+s+" stream(s): hand-made VXLAN pod→pod", "TCP "+s+" stream(s): underlay node→node", "")
		rep.Compare("TCP "+s+" stream(s): same-node pod→pod", "TCP "+s+" stream(s): underlay node→node", "")
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod, rp_filter anti-spoofing", "TCP "+s+" stream(s): Loom pod→pod", "")
		rep.Compare("TCP "+s+" stream(s): "+noConntrackName, "TCP "+s+" stream(s): hand-made VXLAN pod→pod", "")
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod, direct routing", "TCP "+s+" stream(s): hand-made direct route pod→pod", "≥ 0.97")
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod, direct routing", "TCP "+s+" stream(s): "+handDirectCTName, "")
		rep.Compare("TCP "+s+" stream(s): hand-made direct route pod→pod", "TCP "+s+" stream(s): hand-made VXLAN pod→pod", "")
	}
	rep.Compare("TCP 1 stream(s): Loom pod→pod, 100 policies selecting the pods", "TCP 1 stream(s): Loom pod→pod", "≥ 0.95")
	rep.Compare("TCP 4 stream(s): Loom pod→pod, 100 policies selecting the pods", "TCP 4 stream(s): Loom pod→pod", "≥ 0.95")
	rep.Compare("TCP connect+close rate: Loom pod→pod, 100 policies selecting the pods", "TCP connect+close rate: Loom pod→pod", "")
	for _, s := range []string{"1", "4"} {
		rep.Compare("TCP "+s+" stream(s): Loom pod→pod, WireGuard backend", "TCP "+s+" stream(s): hand-made WireGuard pod→pod", "≥ 0.95")
	}
	rep.Compare("RTT p50: Loom pod→pod, WireGuard backend", "RTT p50: hand-made WireGuard pod→pod", "")
	for _, s := range []string{"1", "4"} {
		rep.Compare("TCP "+s+" stream(s): "+ipv6Name, "TCP "+s+" stream(s): Loom pod→pod", "")
	}
	rep.Compare("RTT p50: "+ipv6Name, "RTT p50: Loom pod→pod", "")
	rep.Compare("RTT p50: Loom pod→pod", "RTT p50: underlay node→node", "overhead ≤ 10 µs")
	rep.Compare("RTT p50: hand-made VXLAN pod→pod", "RTT p50: underlay node→node", "")
	rep.Compare("RTT p50: "+handCTName, "RTT p50: underlay node→node", "")
	rep.Compare("RTT p50: "+noConntrackName, "RTT p50: underlay node→node", "")
	rep.Compare("RTT p50: Loom pod→pod", "RTT p50: "+handCTName, "")
	rep.Compare("RTT p99: Loom pod→pod", "RTT p99: underlay node→node", "")
	rep.Compare("TCP connect+close rate: Loom pod→pod", "TCP connect+close rate: underlay node→node", "")
	return nil
}

// ipv6Name is the figure of Loom over an IPv6 underlay.
const ipv6Name = "Loom pod→pod, IPv6 underlay"

// noConntrackFlags configure Loom so that its table needs no connection
// tracking (no masquerade, pod-to-host open, no policies).
var noConntrackFlags = []string{"--masquerade=false", "--allow-pod-to-host", "all"}

// noConntrackName is the figure of Loom run with noConntrackFlags.
const noConntrackName = "Loom pod→pod, --masquerade=false --allow-pod-to-host all (no conntrack)"

// handNodes adds two nodes that run no agent, prefix1 and prefix2, for a
// baseline built by hand.
func handNodes(r *rig.Rig, prefix string) ([2]*rig.Node, error) {
	var nodes [2]*rig.Node
	for i := range nodes {
		var err error
		if nodes[i], err = r.AddNode(fmt.Sprintf("%s%d", prefix, i+1)); err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

// handBaseline builds a hand-made baseline with the overlay's MTU on two
// new nodes.
func handBaseline(r *rig.Rig, prefix string, build bench.HandBuilder) ([2]bench.HandPod, error) {
	nodes, err := handNodes(r, prefix)
	if err != nil {
		return [2]bench.HandPod{}, err
	}
	return build(nodes, 1450)
}

// handCTName is the hand-made tunnel with connection tracking on.
const handCTName = "hand-made VXLAN pod→pod, conntrack on (flannel's masquerade rule)"

// handDirectCTName is the hand-made direct route with connection tracking on.
const handDirectCTName = "hand-made direct route pod→pod, conntrack on (flannel's masquerade rule)"

// fabric starts a two-node Loom fabric (names prefix1, prefix2) with extra
// loomd flags and one pod on each node.
func fabric(r *rig.Rig, prefix string, extra []string) ([2]*rig.Node, [2]*rig.Pod, error) {
	var nodes [2]*rig.Node
	var pods [2]*rig.Pod
	for i := range nodes {
		n, err := r.AddNode(fmt.Sprintf("%s%d", prefix, i+1))
		if err != nil {
			return nodes, pods, err
		}
		var join []*rig.Node
		if i > 0 {
			join = nodes[:1]
		}
		if err := n.StartWith(func(a []string) []string { return append(a, extra...) }, join...); err != nil {
			return nodes, pods, err
		}
		nodes[i] = n
	}
	for i, n := range nodes {
		if err := n.WaitReady(60 * time.Second); err != nil {
			return nodes, pods, err
		}
		p, err := n.AddPod(context.Background(), "p")
		if err != nil {
			return nodes, pods, err
		}
		pods[i] = p
	}
	return nodes, pods, nil
}

// cniBench compares ADD and DEL latency and attach throughput of Loom's
// plugin with the bridge + host-local reference chain on the same node.
func cniBench(rep *bench.Report, bin string, rounds, count int) error {
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := r.AddNode("node1")
	if err != nil {
		return err
	}
	if err := n.Start(); err != nil {
		return err
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		return err
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := n.InstallPlugin(p, filepath.Join(bin, "ref", p)); err != nil {
			return err
		}
	}
	_, loomList, err := n.CNI()
	if err != nil {
		return err
	}
	refList, err := bench.WriteRefConflist(n)
	if err != nil {
		return err
	}
	chains := []struct {
		name string
		list *libcni.NetworkConfigList
	}{{"Loom", loomList}, {"bridge+host-local", refList}}
	for round := 0; round < rounds; round++ {
		logf("CNI round %d/%d", round+1, rounds)
		for i := range chains {
			c := chains[(i+round)%len(chains)]
			a50, a99, d50, d99, err := bench.CNILatency(n, c.list, count)
			if err != nil {
				return err
			}
			rep.Add("CNI ADD p50: "+c.name, "ms", a50)
			rep.Add("CNI ADD p99: "+c.name, "ms", a99)
			rep.Add("CNI DEL p50: "+c.name, "ms", d50)
			rep.Add("CNI DEL p99: "+c.name, "ms", d99)
			rate, err := bench.CNIThroughput(n, c.list, 32, 8)
			if err != nil {
				return err
			}
			rep.Add("CNI pods/s, 8 workers: "+c.name, "pods/s", rate)
			a50, _, d50, _, err = bench.CNILatencyLoaded(n, c.list, loadedPods, count/2)
			if err != nil {
				return err
			}
			rep.Add(loadedPrefix+"ADD p50: "+c.name, "ms", a50)
			rep.Add(loadedPrefix+"DEL p50: "+c.name, "ms", d50)
		}
		for _, p := range []string{"loom", "bridge", "host-local"} {
			start, err := bench.PluginStart(n, p, 20)
			if err != nil {
				return err
			}
			rep.Add("CNI plugin start (VERSION through libcni): "+p, "ms", start)
		}
	}
	rep.Note("CNI: every ADD and DEL starts its plugins (Loom: one; the reference chain: bridge, which starts host-local); the plugin start rows are that floor.")
	rep.Note("CNI on a node running %d pods: the same ADD and DEL timings, while %d pods of the same chain stay attached (most of a /24 subnet): what a chain does per pod already there shows here.", loadedPods, loadedPods)
	for _, f := range []string{"CNI ADD p50: ", "CNI ADD p99: ", "CNI DEL p50: ", "CNI DEL p99: ", "CNI pods/s, 8 workers: ",
		loadedPrefix + "ADD p50: ", loadedPrefix + "DEL p50: "} {
		target := ""
		if strings.Contains(f, "p50") && !strings.HasPrefix(f, loadedPrefix) {
			target = "≤ ⅓ of reference (ratio ≥ 3)"
		}
		rep.Compare(f+"Loom", f+"bridge+host-local", target)
	}
	return nil
}

// loadedPods is how many pods of its own chain a node runs while
// loadedPrefix's rows are measured: most of a /24 node subnet.
const loadedPods = 200

var loadedPrefix = fmt.Sprintf("CNI on a node running %d pods, ", loadedPods)

// scaleBench programs 1,000 (and 5,000) synthetic peers into a real kernel.
func scaleBench(rep *bench.Report, bin string, short bool) error {
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := r.AddNode("scale")
	if err != nil {
		return err
	}
	sizes := []int{1000, 5000}
	if short {
		sizes = []int{1000}
	}
	for _, size := range sizes {
		for round := 0; round < 3; round++ {
			res, err := bench.ProgramPeers(n, size)
			if err != nil {
				return err
			}
			rep.Add(fmt.Sprintf("program %d peers", size), "ms", float64(res.Program.Microseconds())/1e3)
			rep.Add(fmt.Sprintf("no-op resync of %d peers", size), "ms", float64(res.NoopResync.Microseconds())/1e3)
			rep.Add(fmt.Sprintf("no-op resync of %d peers: netlink writes", size), "writes", float64(res.NoopWrites))
		}
	}
	return nil
}

// offloadBench measures the hand-made VXLAN tunnel under each kernel
// option set, in alternating rounds, against the defaults.
func offloadBench(rep *bench.Report, bin string, rounds, secs int) error {
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	pods := make([][2]bench.HandPod, len(bench.VXLANVariants))
	senders := make([]*rig.Node, len(bench.VXLANVariants))
	for i, v := range bench.VXLANVariants {
		nodes, err := handNodes(r, fmt.Sprintf("off%d-", i))
		if err != nil {
			return err
		}
		senders[i] = nodes[0]
		if pods[i], err = bench.BuildHandVariant(r, nodes, v); err != nil {
			return fmt.Errorf("variant %q: %w", v.Name, err)
		}
		p := pods[i]
		if err := rig.Eventually(30*time.Second, func() error { return rig.Ping(p[0].NS, p[1].IP) }); err != nil {
			return fmt.Errorf("variant %q: %w", v.Name, err)
		}
	}
	for round := 0; round < rounds; round++ {
		logf("offload round %d/%d", round+1, rounds)
		for k := range bench.VXLANVariants {
			i := (k + round) % len(bench.VXLANVariants)
			for _, streams := range []int{1, 4} {
				g, _, err := bench.Iperf(pods[i][0].NS, pods[i][1].NS, pods[i][1].IP, streams, secs, "")
				if err != nil {
					return err
				}
				rep.Add(fmt.Sprintf("VXLAN option: TCP %d stream(s), %s", streams, bench.VXLANVariants[i].Name), "Gbit/s", g)
			}
			if bench.VXLANVariants[i].Conntrack {
				// What tracking the tunnel costs the conntrack table: the
				// entries of its UDP flows right after 1,000 connections.
				if _, err := bench.ConnRate(pods[i][0].NS, pods[i][1].NS, pods[i][1].IP, 1000); err != nil {
					return err
				}
				n, err := bench.TunnelFlowsTracked(senders[i], bench.HandVXLANPort)
				if err != nil {
					return err
				}
				rep.Add("VXLAN option: tunnel flows in the sender's conntrack table after 1,000 TCP connections, "+bench.VXLANVariants[i].Name, "entries", float64(n))
			}
		}
	}
	for _, v := range bench.VXLANVariants[1:] {
		against := v.Against
		if against == "" {
			against = "defaults"
		}
		for _, s := range []string{"1", "4"} {
			rep.Compare("VXLAN option: TCP "+s+" stream(s), "+v.Name, "VXLAN option: TCP "+s+" stream(s), "+against, "")
		}
	}
	return nil
}

// policyBench measures compiling and programming 100 policies over 1,000
// pods (250 of them local) into a real nftables table.
func policyBench(rep *bench.Report, bin string) error {
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := r.AddNode("policy")
	if err != nil {
		return err
	}
	for round := 0; round < 3; round++ {
		res, err := bench.ProgramPolicy(n, 1000, 100)
		if err != nil {
			return err
		}
		rep.Add("policy: compile 100 policies over 1,000 pods", "ms", float64(res.Compile.Microseconds())/1e3)
		rep.Add("policy: program 100 policies for 250 local pods (nftables)", "ms", float64(res.Program.Microseconds())/1e3)
		rep.Add("policy: a pod of another node joins the peer sets (nftables, same table)", "ms", float64(res.RemoteJoin.Microseconds())/1e3)
		rep.Add("policy: that pod leaves them (nftables)", "ms", float64(res.RemoteLeave.Microseconds())/1e3)
		rep.Add("policy: a local pod with the labels of one running is attached (nftables)", "ms", float64(res.Replica.Microseconds())/1e3)
		rep.Add("policy: compiled form in memory", "KiB", float64(res.HeapBytes)/1024)
	}
	rep.Note("Policy programming target: compile + program < 1 s for 1,000 pods and 100 policies.")
	if err := firstConnects(rep, r); err != nil {
		return err
	}
	return kubeFootprint(rep, r)
}

// firstConnects measures how often a new pod's first connection to a
// pod on another node whose policy admits it waited for a SYN's resend:
// the db's node had not put the new pod into its peer set yet.
func firstConnects(rep *bench.Report, r *rig.Rig) error {
	var nodes []*rig.Node
	for i := range 3 {
		dir := filepath.Join(r.Dir, fmt.Sprintf("admit%d-policies", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "db.yaml"), []byte(bench.AdmitsWebPolicy), 0o644); err != nil {
			return err
		}
		n, err := r.AddNode(fmt.Sprintf("admit%d", i+1), "--policy-dir", dir)
		if err != nil {
			return err
		}
		if err := n.Start(nodes...); err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := n.WaitReady(60 * time.Second); err != nil {
			return err
		}
	}
	db, err := nodes[0].AddPodWithArgs(context.Background(), "db", [][2]string{{"K8S_POD_NAME", "db"}, {"LOOM_POD_LABELS", "app:db"}})
	if err != nil {
		return err
	}
	stop, err := rig.ServeTCPIn(db.NS, ":80")
	if err != nil {
		return err
	}
	defer stop()
	addr := net.JoinHostPort(db.IP.String(), "80")
	// The web pods' nodes must know db (whom to tell of a new web pod)
	// before the first is added: one web pod reaching db says they do.
	if _, err := bench.FirstConnects(nodes[1:], "warm", 2, addr); err != nil {
		return err
	}
	const pods = 21
	for round := range 3 {
		res, err := bench.FirstConnects(nodes[1:], fmt.Sprintf("web%d", round), pods, addr)
		if err != nil {
			return err
		}
		rep.Add(fmt.Sprintf("policy: first connects of %d new pods, added back to back, to a pod on another node admitting them, that waited for a SYN resend", pods), "", float64(res.Resent))
		rep.Add("policy: first connect of a new pod to a pod on another node admitting it, median", "ms", float64(res.Median.Microseconds())/1e3)
	}
	rep.Note("First connects: 3 nodes with a policy file admitting app=web to app=db; web pods attached on two nodes one after another, each connecting to db on the third the moment its ADD returned. A connect that waited for TCP's SYN resend (1 s) found the new pod not yet admitted there.")
	return nil
}

// kubeFootprint measures loomd and its Kubernetes policy helper at rest
// on a node that follows a cluster of 1,000 pods and 100 policies, served
// by the rig's stand-in API server.
func kubeFootprint(rep *bench.Report, r *rig.Rig) error {
	n, err := r.AddNode("kube")
	if err != nil {
		return err
	}
	api := rig.NewFakeAPIServer()
	if err := bench.FillCluster(api, 1000, 100); err != nil {
		return err
	}
	stop, err := rig.ServeAPI(n.NS, api)
	if err != nil {
		return err
	}
	defer stop()
	kubeconfig := filepath.Join(r.Dir, "kubeconfig")
	if err := rig.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	if err := n.StartWith(func(a []string) []string {
		return append(a, "--policy-source", "kubernetes", "--kubeconfig", kubeconfig)
	}); err != nil {
		return err
	}
	if err := n.WaitReady(90 * time.Second); err != nil {
		return err
	}
	fp, err := bench.Footprint([]*rig.Node{n}, 5*time.Second)
	if err != nil {
		return err
	}
	helper, err := rig.ChildProcess(n.Pid(), "loom-kube-policy")
	if err != nil {
		return err
	}
	rss, anon, err := bench.ProcessMemory(helper)
	if err != nil {
		return err
	}
	const what = ", idle, policy source kubernetes (1,000 pods, 100 policies)"
	rep.Add("loomd RSS"+what, "MiB", fp.RSSMiB)
	rep.Add("loomd anonymous RSS"+what, "MiB", fp.AnonMiB)
	rep.Add("loom-kube-policy RSS"+what, "MiB", rss)
	rep.Add("loom-kube-policy anonymous RSS"+what, "MiB", anon)
	return nil
}

// convergenceBench grows a fabric to each size and measures its gossip
// traffic, a join and a crash at that size; the agents' footprint at the
// largest.
func convergenceBench(rep *bench.Report, bin string, sizes []int, window time.Duration) error {
	restore, err := bench.RaiseNeighborLimits(slices.Max(sizes) + 1)
	if err != nil {
		return err
	}
	defer restore()
	r, err := rig.New(rig.Options{BinDir: bin, Logf: func(string, ...any) {}, AgentArgs: []string{"--dead-node-grace", "0s"}})
	if err != nil {
		return err
	}
	defer r.Close()
	var nodes []*rig.Node
	for _, size := range sizes {
		for len(nodes) < size-1 {
			n, err := r.AddNode(fmt.Sprintf("node%d", len(nodes)+1))
			if err != nil {
				return err
			}
			var join []*rig.Node
			if len(nodes) > 0 {
				join = nodes[:1]
			}
			if err := n.Start(join...); err != nil {
				return err
			}
			nodes = append(nodes, n)
		}
		for _, n := range nodes {
			if err := n.WaitReady(60 * time.Second); err != nil {
				return fmt.Errorf("%w\n--- last lines of %s's log ---\n%s", err, n.Name, rig.Tail(n.LogPath(), 30))
			}
		}
		// Gossip of a settled fabric, before the rounds below add and crash
		// nodes (memberlist keeps gossiping to the dead for a while).
		sent, received, err := bench.GossipRate(nodes, window)
		if err != nil {
			return err
		}
		rep.Add(fmt.Sprintf("gossip bytes/s sent per node, idle, %d nodes", len(nodes)), "B/s", sent)
		rep.Add(fmt.Sprintf("gossip bytes/s received per node, idle, %d nodes", len(nodes)), "B/s", received)
		logf("convergence at %d nodes", size)
		for round := 0; round < 3; round++ {
			c, err := bench.Convergence(r, nodes, fmt.Sprintf("join%d-%d", size, round))
			if err != nil {
				return err
			}
			rep.Add(fmt.Sprintf("join → every node pings its pod, N=%d", size), "ms", float64(c.Join.Milliseconds()))
			rep.Add(fmt.Sprintf("crash → route withdrawn everywhere (grace 0), N=%d", size), "ms", float64(c.Withdraw.Milliseconds()))
			rep.Add(fmt.Sprintf("declared dead → route withdrawn, slowest node (grace 0), N=%d", size), "ms", float64(c.AfterDeath.Milliseconds()))
		}
	}
	logf("footprint at %d nodes", len(nodes)+1)
	fp, err := bench.Footprint(nodes, window)
	if err != nil {
		return err
	}
	rep.Add(fmt.Sprintf("loomd RSS, idle, %d nodes", len(nodes)), "MiB", fp.RSSMiB)
	rep.Add(fmt.Sprintf("loomd anonymous RSS (heap, stacks), idle, %d nodes", len(nodes)), "MiB", fp.AnonMiB)
	rep.Add(fmt.Sprintf("loomd CPU, idle, %d nodes", len(nodes)), "%", fp.CPUPct)
	return nil
}

// profileBench samples the kernel (perf, every CPU) while 4 TCP streams
// run pod to pod over Loom and over the hand-made tunnel, in alternating
// rounds, and records where the CPU goes: what Loom's path costs beyond
// the kernel's own VXLAN cost shows up by category.
func profileBench(rep *bench.Report, bin string, rounds, secs int) error {
	if !bench.PerfAvailable() {
		rep.Note("Kernel profile skipped: perf is not installed (Debian: apt-get install linux-perf).")
		return nil
	}
	r, err := rig.New(rig.Options{BinDir: bin, Logf: logf})
	if err != nil {
		return err
	}
	defer r.Close()
	_, lp, err := fabric(r, "node", nil)
	if err != nil {
		return err
	}
	_, nc, err := fabric(r, "nomasq", noConntrackFlags)
	if err != nil {
		return err
	}
	hand, err := handBaseline(r, "hand", bench.BuildHandTunnel)
	if err != nil {
		return err
	}
	handCT, err := handBaseline(r, "handct", bench.WithConntrack(bench.BuildHandTunnel))
	if err != nil {
		return err
	}
	paths := []struct {
		name           string
		client, server string
		dst            netip.Addr
	}{
		{"Loom pod→pod", lp[0].NS, lp[1].NS, lp[1].IP},
		{"hand-made VXLAN pod→pod", hand[0].NS, hand[1].NS, hand[1].IP},
		{handCTName, handCT[0].NS, handCT[1].NS, handCT[1].IP},
		{noConntrackName, nc[0].NS, nc[1].NS, nc[1].IP},
	}
	for _, p := range paths {
		if err := rig.Eventually(30*time.Second, func() error { return rig.Ping(p.client, p.dst) }); err != nil {
			return err
		}
	}
	for round := 0; round < rounds; round++ {
		logf("kernel profile round %d/%d", round+1, rounds)
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			var gbps float64
			shares, err := bench.ProfileKernel(func() error {
				var err error
				gbps, _, err = bench.Iperf(p.client, p.server, p.dst, 4, secs, "")
				return err
			})
			if err != nil {
				return err
			}
			rep.Add("TCP 4 stream(s) while profiled: "+p.name, "Gbit/s", gbps)
			for _, c := range bench.KernelCategories {
				rep.Add(fmt.Sprintf("CPU share, %s: %s", c.Name, p.name), "%", shares[c.Name])
			}
		}
	}
	rep.Compare("TCP 4 stream(s) while profiled: Loom pod→pod", "TCP 4 stream(s) while profiled: hand-made VXLAN pod→pod", "")
	rep.Compare("TCP 4 stream(s) while profiled: Loom pod→pod", "TCP 4 stream(s) while profiled: "+handCTName, "")
	rep.Compare("TCP 4 stream(s) while profiled: "+noConntrackName, "TCP 4 stream(s) while profiled: hand-made VXLAN pod→pod", "")
	return nil
}
