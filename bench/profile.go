package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// KernelCategories group kernel symbols by what they do on the path of a
// packet, in the order they are tried; the first match wins.
var KernelCategories = []struct {
	Name    string
	Pattern *regexp.Regexp
}{
	{"netfilter (nftables, conntrack, bridge netfilter)", regexp.MustCompile(`^(nft_|nf_|__nf_|nfnl|ipv4_conntrack|br_nf|ipt_|ip_tables)`)},
	{"VXLAN and UDP tunnel", regexp.MustCompile(`vxlan|udp_tunnel|iptunnel|gro_cells|udp_gro|udp4_lib|__udp4|udp_rcv|udp_queue|udp_unicast`)},
	{"copying data (send and receive)", regexp.MustCompile(`copy_(from|to)_(iter|user)|memcpy|csum_partial_copy`)},
	{"idle", regexp.MustCompile(`halt|idle|mwait`)},
}

// PerfAvailable reports whether perf can sample the whole machine.
func PerfAvailable() bool {
	_, err := exec.LookPath("perf")
	return err == nil
}

// ProfileKernel samples every CPU (software clock, so it works where the
// machine has no hardware counters) while run runs, and returns the share
// of samples per KernelCategories entry plus "other", in percent.
func ProfileKernel(run func() error) (map[string]float64, error) {
	f, err := os.CreateTemp("", "loom-perf-*.data")
	if err != nil {
		return nil, err
	}
	data := f.Name()
	f.Close()
	defer os.Remove(data)
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-a", "-o", data)
	var recErr bytes.Buffer
	rec.Stderr = &recErr
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("start perf record: %w", err)
	}
	runErr := run()
	_ = rec.Process.Signal(os.Interrupt)
	if err := rec.Wait(); err != nil && rec.ProcessState.ExitCode() > 0 {
		return nil, fmt.Errorf("perf record: %w: %s", err, recErr.String())
	}
	if runErr != nil {
		return nil, runErr
	}
	out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym").Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %w", err)
	}
	return categorise(out), nil
}

// categorise sums `perf report --sort sym` lines ("  12.34%  [k] name")
// into KernelCategories.
func categorise(report []byte) map[string]float64 {
	shares := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(report))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || !strings.HasSuffix(fields[0], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(fields[0], "%"), 64)
		if err != nil {
			continue
		}
		sym, cat := fields[len(fields)-1], "other"
		for _, c := range KernelCategories {
			if c.Pattern.MatchString(sym) {
				cat = c.Name
				break
			}
		}
		shares[cat] += pct
	}
	return shares
}
