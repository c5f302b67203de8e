package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// getIn fetches url from inside a namespace (the agent's metrics listen on
// the node's own loopback).
func getIn(t *testing.T, nsName, url string) (int, string) {
	t.Helper()
	code, body, err := rig.GetIn(nsName, url)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// TestMetricsAndHealth scrapes a live agent: every listed series exists,
// and they move when the fabric does.
func TestMetricsAndHealth(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	n := nodes[0]
	const base = rig.AgentHTTP
	if code, body := getIn(t, n.NS, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	if code, body := getIn(t, n.NS, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz of a ready node = %d %s", code, body)
	}
	_, before := getIn(t, n.NS, base+"/metrics")
	for _, series := range []string{
		"loom_build_info", "loom_peers", "loom_subnet_leases", "loom_pod_addresses", "loom_kernel_entries",
		"loom_netlink_writes_total", "loom_netlink_errors_total", "loom_reconcile_runs_total",
		"loom_reconcile_duration_seconds_bucket", "loom_subnet_conflicts_total", "loom_gossip_bytes_total",
		"loom_gossip_messages_total", "loom_gossip_key_failures_total", "loom_cni_requests_total",
		"loom_cni_request_duration_seconds_bucket", "go_goroutines", "process_resident_memory_bytes",
		"loom_gossip_max_peer_clock_offset_seconds", "loom_pod_directory_records", "loom_conntrack_entries_deleted_total",
	} {
		if _, ok := rig.MetricValue(before, series, ""); !ok {
			t.Errorf("series %s missing", series)
		}
	}
	if v, _ := rig.MetricValue(before, "loom_peers", `state="alive"`); v != 1 {
		t.Errorf("loom_peers{state=alive} = %v, want 1", v)
	}
	if v, _ := rig.MetricValue(before, "loom_subnet_leases", `state="active"`); v != 2 {
		t.Errorf("loom_subnet_leases{state=active} = %v, want 2", v)
	}
	if v, _ := rig.MetricValue(before, "loom_kernel_entries", `kind="peer_route"`); v != 1 {
		t.Errorf("loom_kernel_entries{kind=peer_route} = %v, want 1", v)
	}
	if v, _ := rig.MetricValue(before, "loom_gossip_bytes_total", `direction="received"`); v <= 0 {
		t.Errorf("no gossip bytes received counted")
	}
	// Both agents read the same clock.
	if v, _ := rig.MetricValue(before, "loom_gossip_max_peer_clock_offset_seconds", ""); v > 1 {
		t.Errorf("loom_gossip_max_peer_clock_offset_seconds = %v between agents on one machine", v)
	}
	adds, _ := rig.MetricValue(before, "loom_cni_requests_total", `result="ok",verb="ADD"`)
	used, _ := rig.MetricValue(before, "loom_pod_addresses", `state="used"`)

	addPod(t, n, "p")
	mustExec(t, n, "ip", "link", "del", "loom.1") // drift for the agent to repair
	if err := rig.Eventually(15*time.Second, func() error {
		_, after, err := rig.GetIn(n.NS, base+"/metrics")
		if err != nil {
			return err
		}
		if v, _ := rig.MetricValue(after, "loom_cni_requests_total", `result="ok",verb="ADD"`); v < adds+2 {
			return fmt.Errorf("ADD requests %v, want at least %v (allocate and attach)", v, adds+2)
		}
		if v, _ := rig.MetricValue(after, "loom_pod_addresses", `state="used"`); v != used+1 {
			return fmt.Errorf("used addresses %v, want %v", v, used+1)
		}
		if v, _ := rig.MetricValue(after, "loom_drift_repaired_total", `kind="device"`); v < 1 {
			return fmt.Errorf("device repair not counted as drift")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestReadyzExplainsNotReady: a node that cannot reach anyone to join never
// claims a subnet; /readyz says 503 and why.
func TestReadyzExplainsNotReady(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("lonely")
	if err != nil {
		t.Fatal(err)
	}
	ghost, err := r.AddNode("ghost") // a join target with no agent
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ghost); err != nil {
		t.Fatal(err)
	}
	waitNotReady(t, n, "no subnet")
}

// waitNotReady waits until n's /readyz answers 503 with a reason
// containing why.
func waitNotReady(t *testing.T, n *rig.Node, why string) {
	t.Helper()
	if err := rig.Eventually(20*time.Second, func() error {
		code, body, err := rig.GetIn(n.NS, rig.AgentHTTP+"/readyz")
		if err != nil {
			return err
		}
		if code != 503 || !strings.Contains(body, why) {
			return fmt.Errorf("/readyz = %d %q, want 503 with %q", code, body, why)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
