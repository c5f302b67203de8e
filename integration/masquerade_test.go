package integration

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
)

// TestWithoutMasquerade: with --masquerade=false a pod reaches a host
// outside the fabric with its own address (the host routes the pod back
// through its node, as a router of a routed pod network would), pods still
// reach each other, and with pod-to-host open and no policy source nothing
// of Loom's needs connection tracking: the nodes track no connection.
func TestWithoutMasquerade(t *testing.T) {
	r := newRig(t, "--masquerade=false", "--allow-pod-to-host", "all")
	nodes := startNodes(t, r, 2)
	pod := addPod(t, nodes[1], "pod")
	other := addPod(t, nodes[0], "other")
	if err := rig.Eventually(30*time.Second, func() error { return rig.Ping(other.NS, pod.IP) }); err != nil {
		t.Fatalf("pod to pod across nodes: %v", err)
	}
	outside, err := r.AddNode("outside")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rig.Run("ip", "-n", outside.NS, "route", "add", pod.IP.String()+"/32", "via", nodes[1].Addr.String()); err != nil {
		t.Fatal(err)
	}
	l := listenIn(t, outside.NS, net.JoinHostPort(outside.Addr.String(), "8083"))
	if seen := peerAddrSeen(t, l, func() error { return dialFrom(pod.NS, l.Addr().String()) }); seen != pod.IP {
		t.Fatalf("outside host saw %s, want the pod's own %s", seen, pod.IP)
	}
	for _, n := range nodes {
		out, err := n.Exec("cat", "/proc/sys/net/netfilter/nf_conntrack_count")
		if err != nil {
			t.Fatal(err)
		}
		if c := strings.TrimSpace(out); c != "0" {
			t.Errorf("%s tracks %s connections; want none (nft list table ip loom must need no conntrack)", n.Name, c)
		}
	}
}
