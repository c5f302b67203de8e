package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
)

// kernelDump is what a node's kernel holds for Loom, read with iproute2's
// JSON output: Loom-tagged routes and the tunnel device's neighbour and FDB
// entries, each as one normalised line, sorted.
func kernelDump(t *testing.T, n *rig.Node) []string {
	t.Helper()
	var out []string
	var routes []struct {
		Dst     string   `json:"dst"`
		Gateway string   `json:"gateway"`
		Dev     string   `json:"dev"`
		Type    string   `json:"type"`
		Flags   []string `json:"flags"`
	}
	readJSON(t, n, &routes, "ip", "-j", "-4", "route", "show", "proto", "76")
	for _, r := range routes {
		if strings.HasPrefix(r.Dev, "loom") && len(r.Dev) == 15 {
			r.Dev = "<pod-veth>"
		}
		if r.Type == "" {
			r.Type = "unicast"
		}
		onlink := false
		for _, f := range r.Flags {
			onlink = onlink || f == "onlink"
		}
		out = append(out, fmt.Sprintf("route %s type=%s via=%s dev=%s onlink=%v", r.Dst, r.Type, r.Gateway, r.Dev, onlink))
	}
	var neighs []struct {
		Dst    string   `json:"dst"`
		Lladdr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if _, err := n.Exec("ip", "link", "show", "loom.1"); err == nil {
		readJSON(t, n, &neighs, "ip", "-j", "-4", "neigh", "show", "dev", "loom.1")
		for _, e := range neighs {
			out = append(out, fmt.Sprintf("neigh %s lladdr=%s state=%v", e.Dst, e.Lladdr, e.State))
		}
		var fdbs []struct {
			Mac   string   `json:"mac"`
			Dst   string   `json:"dst"`
			Flags []string `json:"flags"`
			State string   `json:"state"`
		}
		readJSON(t, n, &fdbs, "bridge", "-j", "fdb", "show", "dev", "loom.1")
		for _, f := range fdbs {
			out = append(out, fmt.Sprintf("fdb %s dst=%s state=%s", f.Mac, f.Dst, f.State))
		}
	} else {
		out = append(out, "no loom.1 device")
	}
	sort.Strings(out)
	return out
}

func readJSON(t *testing.T, n *rig.Node, v any, cmd ...string) {
	t.Helper()
	o := mustExec(t, n, cmd[0], cmd[1:]...)
	if strings.TrimSpace(o) == "" {
		return
	}
	if err := json.Unmarshal([]byte(o), v); err != nil {
		t.Fatalf("%v: %v in %q", cmd, err, o)
	}
}

// expectedDump is the kernel state the live nodes imply for self: for every
// other live node its route, neighbour and FDB entry; for self its
// unreachable subnet route and one route per local pod.
func expectedDump(self api.NodeStatus, live []api.NodeStatus, pods []netip.Addr) []string {
	var out []string
	wireguard := strings.HasPrefix(self.Backend, "wireguard")
	if wireguard {
		out = append(out, "no loom.1 device")
	}
	for _, p := range live {
		if p.Name == self.Name {
			continue
		}
		s := netip.MustParsePrefix(p.Subnet)
		if wireguard {
			out = append(out, fmt.Sprintf("route %s type=unicast via= dev=loom-wg onlink=false", s))
			continue
		}
		out = append(out,
			fmt.Sprintf("route %s type=unicast via=%s dev=loom.1 onlink=true", s, s.Addr()),
			fmt.Sprintf("neigh %s lladdr=%s state=[PERMANENT]", s.Addr(), p.VTEPMAC),
			fmt.Sprintf("fdb %s dst=%s state=permanent", p.VTEPMAC, p.Underlay))
	}
	out = append(out, fmt.Sprintf("route %s type=unreachable via= dev= onlink=false", self.Subnet))
	for _, ip := range pods {
		out = append(out, fmt.Sprintf("route %s type=unicast via= dev=<pod-veth> onlink=false", ip))
	}
	sort.Strings(out)
	return out
}

// waitKernelMatches waits until the node's kernel holds exactly what the
// live nodes (and its pods) imply, and reports the diff if it never does.
func waitKernelMatches(t *testing.T, n *rig.Node, live []*rig.Node, pods []netip.Addr, timeout time.Duration) {
	t.Helper()
	var statuses []api.NodeStatus
	var self api.NodeStatus
	for _, l := range live {
		st, err := l.Status()
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, st.Node)
		if l == n {
			self = st.Node
		}
	}
	want := expectedDump(self, statuses, pods)
	var got []string
	err := rig.Eventually(timeout, func() error {
		got = kernelDump(t, n)
		if !equalDumps(got, want) {
			return fmt.Errorf("kernel of %s differs", n.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n--- have ---\n%s\n--- want ---\n%s", err, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func equalDumps(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
