// Command demo stands up a three-node Loom fabric in network namespaces,
// attaches two pods per node through libcni, pings every ordered pod pair,
// prints a status table and removes everything, also when interrupted.
// `make demo` runs it as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

func main() {
	os.Exit(run())
}

func run() int {
	nodes := flag.Int("nodes", 3, "number of nodes")
	pods := flag.Int("pods", 2, "pods per node")
	bin := flag.String("bin", "", "directory with loomd, loom, loomctl (default: build them)")
	ipv6 := flag.Bool("ipv6", false, "give the nodes IPv6 underlay addresses only")
	flag.Parse()
	logf := func(format string, a ...any) { fmt.Printf("demo: "+format+"\n", a...) }
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: must run as root (it creates network namespaces)")
		return 1
	}
	if *bin == "" {
		dir, err := os.MkdirTemp("", "loom-demo-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		logf("building loomd, loom, loomctl")
		if err := rig.Build(".", dir); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		*bin = dir
	}
	r, err := rig.New(rig.Options{BinDir: *bin, Logf: logf, IPv6Underlay: *ipv6})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	// Clean up on every exit path, Ctrl-C and SIGTERM included.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		logf("%s: cleaning up", s)
		r.Close()
		os.Exit(130)
	}()
	ok, total, err := demo(r, *nodes, *pods, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		for _, n := range r.Nodes() {
			fmt.Fprintf(os.Stderr, "--- last log lines of %s ---\n%s\n", n.Name, rig.Tail(n.LogPath(), 15))
		}
	}
	logf("cleaning up")
	if cerr := r.Close(); cerr != nil {
		fmt.Fprintln(os.Stderr, "demo: cleanup:", cerr)
	}
	if total > 0 {
		fmt.Printf("demo: %d/%d pod pairs reachable\n", ok, total)
	}
	if err != nil || ok != total {
		return 1
	}
	return 0
}

// demo runs the scenario and returns how many ordered pod pairs reached
// each other out of how many.
func demo(r *rig.Rig, nodes, perNode int, logf func(string, ...any)) (ok, total int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var all []*rig.Node
	for i := 1; i <= nodes; i++ {
		n, err := r.AddNode(fmt.Sprintf("node%d", i))
		if err != nil {
			return 0, 0, err
		}
		join := []*rig.Node{}
		if i > 1 {
			join = all[:1]
		}
		if err := n.Start(join...); err != nil {
			return 0, 0, err
		}
		all = append(all, n)
	}
	for _, n := range all {
		if err := n.WaitReady(60 * time.Second); err != nil {
			return 0, 0, err
		}
	}
	logf("%d nodes ready; attaching %d pods per node through libcni", nodes, perNode)
	var pods []*rig.Pod
	for _, n := range all {
		for j := 1; j <= perNode; j++ {
			p, err := n.AddPod(ctx, fmt.Sprintf("%s-pod%d", n.Name, j))
			if err != nil {
				return 0, 0, err
			}
			pods = append(pods, p)
		}
	}
	// Every node must have programmed every peer before the census.
	for _, n := range all {
		n := n
		if err := rig.Eventually(30*time.Second, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			programmed := 0
			for _, p := range st.Peers {
				if p.Programmed {
					programmed++
				}
			}
			if programmed != nodes-1 {
				return fmt.Errorf("%s has programmed %d of %d peers", n.Name, programmed, nodes-1)
			}
			return nil
		}); err != nil {
			return 0, 0, err
		}
	}
	results := rig.PingAll(pods)
	for _, res := range results {
		if res.Err == nil {
			ok++
		} else {
			logf("UNREACHABLE %s (%s) -> %s (%s): %v", res.From.Name, res.From.IP, res.To.Name, res.To.IP, res.Err)
		}
	}
	printTables(all, pods)
	if ok != len(results) {
		return ok, len(results), fmt.Errorf("%d pod pairs unreachable", len(results)-ok)
	}
	return ok, len(results), nil
}

func printTables(nodes []*rig.Node, pods []*rig.Pod) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tUNDERLAY\tSUBNET\tVTEP MAC\tREADY\tPEERS PROGRAMMED")
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			fmt.Fprintf(tw, "%s\t%s\t?\t?\t%v\t\n", n.Name, n.Addr, err)
			continue
		}
		var peers []string
		for _, p := range st.Peers {
			if p.Programmed {
				peers = append(peers, p.Name)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", st.Node.Name, st.Node.Underlay, st.Node.Subnet, st.Node.VTEPMAC, st.Node.Ready, strings.Join(peers, ","))
	}
	tw.Flush()
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPOD\tNODE\tIP")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Node.Name, p.IP)
	}
	tw.Flush()
	fmt.Println()
}
