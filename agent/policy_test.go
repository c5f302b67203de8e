package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/loomnet/loom/overlay"
	"github.com/loomnet/loom/policy"
)

// TestPendingPolicies: with a policy source, the policies are pending
// until a first good set (files) or view (Kubernetes) is in, and other
// nodes' pods are not read meanwhile; without a source nothing is ever
// pending.
func TestPendingPolicies(t *testing.T) {
	awaiting := []policy.Pod{{Namespace: "x", Name: "a", Node: "n2"}}
	running := []policy.Pod{{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.0.2")}}
	for _, tc := range []struct {
		source      string
		pods        []policy.Pod
		why         string
		readsBefore bool
		readsAfter  bool
	}{
		{PolicySourceNone, nil, "", false, false},
		{PolicySourceFiles, nil, "policy directory", false, true},
		{PolicySourceKubernetes, awaiting, "Kubernetes API", false, true},
		{PolicySourceKubernetes, running, "Kubernetes API", false, false},
	} {
		// What is compiled while pending holds no policy, and is not what
		// the firewall enforces: the status says it waits instead.
		compiled := &policy.Compiled{Pods: []policy.PodRules{{IP: netip.MustParseAddr("10.244.0.2"), Policies: []string{"x/p"}}}}
		p := &policyState{source: tc.source, compiled: compiled}
		a := &Agent{policy: p, fw: overlay.NewNFTables()}
		if p.pending() != (tc.why != "") || p.readsPodDirectory() != tc.readsBefore {
			t.Errorf("%s, nothing loaded: pending %v, reads pods %v", tc.source, p.pending(), p.readsPodDirectory())
		}
		if tc.why != "" && !strings.Contains(p.pendingError().Error(), tc.why) {
			t.Errorf("%s: pending because %q, which does not say %q", tc.source, p.pendingError(), tc.why)
		}
		if st := a.policyStatus(); tc.why != "" && (!strings.Contains(st.Pending, tc.why) || len(st.Pods) != 0) {
			t.Errorf("%s, nothing loaded: policy status says pending %q with pods %+v, want why and no pods", tc.source, st.Pending, st.Pods)
		}
		p.setObjects(policy.Objects{}, tc.pods)
		if p.pending() || p.readsPodDirectory() != tc.readsAfter {
			t.Errorf("%s, loaded: pending %v, reads pods %v, want false, %v", tc.source, p.pending(), p.readsPodDirectory(), tc.readsAfter)
		}
		if st := a.policyStatus(); st.Pending != "" || (tc.source != PolicySourceNone && len(st.Pods) != 1) {
			t.Errorf("%s, loaded: policy status says pending %q with pods %+v, want the pod compiled", tc.source, st.Pending, st.Pods)
		}
	}
}

// TestPendingFirewall: while the policies are pending, the firewall of the
// last run is kept (overlay.Desired.KeepFirewall); without one, the whole
// firewall is written with every local pod isolated both ways.
func TestPendingFirewall(t *testing.T) {
	pods := []overlay.PodRoute{
		{IP: netip.MustParseAddr("10.244.0.3"), HostIf: "loombbbbbbbbbbb"},
		{IP: netip.MustParseAddr("10.244.0.2"), HostIf: "loomaaaaaaaaaaa"},
	}
	fresh := overlay.Desired{Pods: pods, Policy: &policy.Compiled{}}
	pendingFirewall(&fresh)
	if !fresh.KeepFirewall || fresh.Policy == nil || len(fresh.Policy.Pods) != 2 {
		t.Fatalf("keep %v, policy %+v; want the firewall kept, or else every pod isolated", fresh.KeepFirewall, fresh.Policy)
	}
	for i, want := range []string{"loomaaaaaaaaaaa", "loombbbbbbbbbbb"} {
		r := fresh.Policy.Pods[i]
		if r.HostIf != want || r.Ingress == nil || len(r.Ingress.Allow) != 0 || r.Egress == nil || len(r.Egress.Allow) != 0 {
			t.Errorf("pod rules %d: %+v, want %s isolated both ways", i, r, want)
		}
	}
}
