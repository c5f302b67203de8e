package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loomnet/loom/integration/rig"
	"github.com/vishvananda/netlink"
)

// ConvergenceTimes is what one join-and-crash round measured.
type ConvergenceTimes struct {
	// Join is from the new node's agent start until every existing node
	// pings its first pod.
	Join time.Duration
	// Withdraw is from the node's crash until no existing node routes to
	// its subnet: memberlist's failure detection and Loom's reaction.
	Withdraw time.Duration
	// AfterDeath is Loom's part of Withdraw: over the existing nodes, the
	// longest time from one declaring the crashed node dead (its log's
	// "peer dead" line, to the millisecond) to its route being gone (seen
	// by polling every 20 ms, so it reads up to 20 ms long).
	AfterDeath time.Duration
}

// Convergence adds a node to a fabric, measures its join, crashes it and
// measures its withdrawal. The rig's agents run with --dead-node-grace 0s.
func Convergence(r *rig.Rig, existing []*rig.Node, name string) (ConvergenceTimes, error) {
	var res ConvergenceTimes
	n, err := r.AddNode(name)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := n.Start(existing[0]); err != nil {
		return res, err
	}
	// Poll readiness and pings fast: the rig's own helpers back off and
	// wait a second per missed ping, which would quantise the figure.
	if err := everyone([]*rig.Node{n}, func(o *rig.Node) error {
		st, err := o.Status()
		if err == nil && !st.Node.Ready {
			err = fmt.Errorf("%s not ready", o.Name)
		}
		return err
	}); err != nil {
		return res, err
	}
	pod, err := n.AddPod(context.Background(), "first")
	if err != nil {
		return res, err
	}
	if err := everyone(existing, func(o *rig.Node) error { return rig.PingWithin(o.NS, pod.IP, 100*time.Millisecond) }); err != nil {
		return res, err
	}
	res.Join = time.Since(start)
	st, err := n.Status()
	if err != nil {
		return res, err
	}
	subnet, err := netip.ParsePrefix(st.Node.Subnet)
	if err != nil {
		return res, fmt.Errorf("%s's subnet: %w", name, err)
	}
	// One netlink handle per node, opened before the crash: polling the
	// routes through them costs far less than starting `ip` 50 times over.
	handles := map[*rig.Node]*netlink.Handle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for _, o := range existing {
		h, err := nsHandle(o.NS)
		if err != nil {
			return res, err
		}
		handles[o] = h
	}
	var mu sync.Mutex
	gone := map[*rig.Node]time.Time{}
	n.Stop(syscall.SIGKILL)
	start = time.Now()
	err = everyone(existing, func(o *rig.Node) error {
		routes, err := handles[o].RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(subnet)}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		if len(routes) > 0 {
			return fmt.Errorf("%s still routes to %s", o.Name, subnet)
		}
		mu.Lock()
		gone[o] = time.Now()
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	res.Withdraw = time.Since(start)
	for _, o := range existing {
		dead, err := loggedAt(o.LogPath(), "peer dead", name)
		if err != nil {
			return res, err
		}
		res.AfterDeath = max(res.AfterDeath, gone[o].Sub(dead))
	}
	return res, nil
}

// loggedAt is when an agent's JSON log last said msg about node.
func loggedAt(path, msg, node string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	var at time.Time
	for _, l := range bytes.Split(b, []byte("\n")) {
		var e struct{ TS, Msg, Node string }
		if json.Unmarshal(l, &e) != nil || e.Msg != msg || e.Node != node {
			continue
		}
		t, err := time.Parse(logTimeLayout, e.TS)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: %q logged at %q: %w", path, msg, e.TS, err)
		}
		at = t
	}
	if at.IsZero() {
		return at, fmt.Errorf("%s: no %q about %s", path, msg, node)
	}
	return at, nil
}

// logTimeLayout is zap's ISO8601 time encoding, which loomd's logs use.
const logTimeLayout = "2006-01-02T15:04:05.000Z0700"

// everyone waits until check passes for every node, polling each in
// parallel as fast as the check returns.
func everyone(nodes []*rig.Node, check func(*rig.Node) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, o := range nodes {
		wg.Add(1)
		go func(o *rig.Node) {
			defer wg.Done()
			deadline := time.Now().Add(90 * time.Second)
			for {
				err := check(o)
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					errs <- err
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}(o)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// AgentFootprint is the average use of the nodes' agents.
type AgentFootprint struct {
	// RSSMiB is resident memory; AnonMiB the part of it that is the
	// process's own (heap, stacks), the rest being clean pages of the
	// binary, which the kernel can drop and re-read.
	RSSMiB, AnonMiB float64
	CPUPct          float64 // of one core
}

// Footprint measures the nodes' agents over window.
func Footprint(nodes []*rig.Node, window time.Duration) (AgentFootprint, error) {
	var fp AgentFootprint
	cpu0 := map[int]float64{}
	for _, n := range nodes {
		cpu0[n.Pid()] = cpuSeconds(n.Pid())
	}
	start := time.Now()
	time.Sleep(window)
	elapsed := time.Since(start).Seconds()
	for _, n := range nodes {
		pid := n.Pid()
		rss, anon, err := ProcessMemory(pid)
		if err != nil {
			return fp, err
		}
		fp.RSSMiB += rss
		fp.AnonMiB += anon
		fp.CPUPct += (cpuSeconds(pid) - cpu0[pid]) / elapsed * 100
	}
	n := float64(len(nodes))
	fp.RSSMiB, fp.AnonMiB, fp.CPUPct = fp.RSSMiB/n, fp.AnonMiB/n, fp.CPUPct/n
	return fp, nil
}

// ProcessMemory returns a process's resident memory and the anonymous
// part of it (heap, stacks), in MiB.
func ProcessMemory(pid int) (rss, anon float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		}
	}
	return rss, anon, nil
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// neighThresholds are the kernel's ARP table limits. The table is shared
// by every network namespace of the host, so a rig of n nodes that all
// talk to each other holds about n² dynamic entries: at 50 nodes more than
// the default limit of 1024, and the kernel then drops new entries
// ("neighbor table overflow") and nodes cannot reach each other. On real
// hosts each node has its own table and needs an entry per peer only.
var neighThresholds = []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"}

// RaiseNeighborLimits lifts the host's ARP table limits for a rig of n
// nodes, if they are lower, and returns a function that restores them.
func RaiseNeighborLimits(n int) (restore func(), err error) {
	want := []int{n * n, 2 * n * n, 4 * n * n}
	var old []string
	for i, name := range neighThresholds {
		path := "/proc/sys/net/ipv4/neigh/default/" + name
		b, err := os.ReadFile(path)
		if err != nil {
			return func() {}, err
		}
		cur := strings.TrimSpace(string(b))
		old = append(old, cur)
		if v, _ := strconv.Atoi(cur); v < want[i] {
			if err := os.WriteFile(path, []byte(strconv.Itoa(want[i])), 0o644); err != nil {
				return func() {}, fmt.Errorf("raise %s: %w", name, err)
			}
		}
	}
	return func() {
		// Highest first going down, so thresh1 <= thresh2 <= thresh3 holds.
		for i := len(neighThresholds) - 1; i >= 0; i-- {
			os.WriteFile("/proc/sys/net/ipv4/neigh/default/"+neighThresholds[i], []byte(old[i]), 0o644)
		}
	}, nil
}

// GossipRate is the gossip traffic of a node, in bytes per second sent and
// received (UDP and TCP), averaged over nodes and measured over window
// from each agent's loom_gossip_bytes_total, served at rig.AgentHTTP
// inside the node's namespace.
func GossipRate(nodes []*rig.Node, window time.Duration) (sent, received float64, err error) {
	type sample struct {
		at             time.Time
		sent, received float64
	}
	scrape := func(n *rig.Node) (sample, error) {
		code, body, err := rig.GetIn(n.NS, rig.AgentHTTP+"/metrics")
		if err != nil {
			return sample{}, err
		}
		if code != 200 {
			return sample{}, fmt.Errorf("%s metrics: HTTP %d", n.Name, code)
		}
		// A series not yet exported is a counter still at zero.
		s, _ := rig.MetricValue(body, "loom_gossip_bytes_total", `direction="sent"`)
		r, _ := rig.MetricValue(body, "loom_gossip_bytes_total", `direction="received"`)
		return sample{time.Now(), s, r}, nil
	}
	first := make([]sample, len(nodes))
	for i, n := range nodes {
		if first[i], err = scrape(n); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(window)
	for i, n := range nodes {
		last, err := scrape(n)
		if err != nil {
			return 0, 0, err
		}
		secs := last.at.Sub(first[i].at).Seconds()
		sent += (last.sent - first[i].sent) / secs
		received += (last.received - first[i].received) / secs
	}
	return sent / float64(len(nodes)), received / float64(len(nodes)), nil
}
