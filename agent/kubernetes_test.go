package agent

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeHelperEnv makes this test binary act as the Kubernetes helper in the
// way the variable names (see fakeKubeHelper), so the watcher's process
// handling is tested against a real child process.
const fakeHelperEnv = "LOOM_TEST_KUBE_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeHelperEnv); mode != "" {
		os.Exit(fakeKubeHelper(mode))
	}
	os.Exit(m.Run())
}

func fakeKubeHelper(mode string) int {
	view := policy.NewClusterView(nil, nil, []policy.Pod{{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.0.10")}})
	switch mode {
	case "serve", "crash":
		if err := policy.WriteClusterView(os.Stdout, view); err != nil {
			return 1
		}
		if mode == "crash" {
			fmt.Fprintln(os.Stderr, "loom-kube-policy: watch pods: boom")
			return 1
		}
	case "refuse":
		fmt.Fprintln(os.Stderr, `{"level":"info","msg":"starting"}`)
		fmt.Fprintln(os.Stderr, "loom-kube-policy: kubernetes: unable to load in-cluster configuration")
		return 1
	case "garbage":
		fmt.Println("hello")
	default:
		return 3
	}
	io.Copy(io.Discard, os.Stdin) // until the watcher goes, as the real one
	return 0
}

// watcherProbe collects what a kubeWatcher hands the agent.
type watcherProbe struct {
	mu     sync.Mutex
	views  int
	errors []error
}

func (p *watcherProbe) watcher(t *testing.T, mode string) *kubeWatcher {
	t.Setenv(fakeHelperEnv, mode)
	return &kubeWatcher{
		argv: []string{os.Args[0]},
		onView: func(v policy.ClusterView) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(v.Pods) != 1 {
				p.errors = append(p.errors, fmt.Errorf("view with %d pods", len(v.Pods)))
			}
			p.views++
		},
		onError: func(err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.errors = append(p.errors, err)
		},
		restartMin: 10 * time.Millisecond,
	}
}

func (p *watcherProbe) counts() (views, errors int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.views, len(p.errors)
}

// stopWithin fails the test if the watcher (and so its helper) does not
// stop in time.
func stopWithin(t *testing.T, w *kubeWatcher, d time.Duration) {
	t.Helper()
	stopped := make(chan struct{})
	go func() { w.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(d):
		t.Fatalf("watcher not stopped after %v", d)
	}
}

// waitCounts waits until the probe has at least views views and errors
// errors.
func (p *watcherProbe) waitCounts(t *testing.T, views, errors int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, e := p.counts()
		if v >= views && e >= errors {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d views, %d errors, want at least %d and %d", v, e, views, errors)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKubeWatcherFirstView: start returns at once, the helper's view is
// handed over, and stop ends the helper.
func TestKubeWatcherFirstView(t *testing.T) {
	var p watcherProbe
	w := p.watcher(t, "serve")
	w.start(context.Background())
	p.waitCounts(t, 1, 0)
	stopWithin(t, w, 10*time.Second)
	if views, errs := p.counts(); views != 1 || errs != 0 {
		t.Errorf("after stop: %d views, errors %v", views, p.errors)
	}
}

// TestKubeWatcherReportsWhyThereIsNoView: a helper that ends or talks
// nonsense before its first view is reported with the reason, and that
// pods wait meanwhile; it is started again.
func TestKubeWatcherReportsWhyThereIsNoView(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"refuse", []string{"exit status 1", "unable to load in-cluster configuration"}},
		{"garbage", []string{"not a view", "cluster view 1"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			var p watcherProbe
			w := p.watcher(t, tc.mode)
			w.start(context.Background())
			p.waitCounts(t, 0, 2)
			stopWithin(t, w, 10*time.Second)
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.views != 0 {
				t.Errorf("%d views handed over", p.views)
			}
			for _, err := range p.errors {
				for _, want := range append(tc.want, "no view yet: pods wait") {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("reported %q, which does not say %q", err, want)
					}
				}
			}
		})
	}
}

// TestKubeWatcherRestarts: a helper that dies is started again, each end
// is reported with its reason, and every run's view is handed over.
func TestKubeWatcherRestarts(t *testing.T) {
	var p watcherProbe
	w := p.watcher(t, "crash")
	w.start(context.Background())
	p.waitCounts(t, 3, 2)
	stopWithin(t, w, 10*time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, err := range p.errors {
		if !strings.Contains(err.Error(), "watch pods: boom") || !strings.Contains(err.Error(), "last view stays in force") {
			t.Errorf("reported %q, want the helper's reason and that the last view stays", err)
		}
	}
}

// TestClusterViewInForce: a view from the helper puts its policies and
// its pods' labels in force for local pods matched by name, reports the
// policies left out, and asks for a reconcile.
func TestClusterViewInForce(t *testing.T) {
	a := &Agent{log: zap.NewNop(), kick: make(chan struct{}, 1), policy: &policyState{source: PolicySourceKubernetes}}
	a.metrics = newMetrics(a)
	ip := netip.MustParseAddr("10.244.0.10")
	isolate := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "isolate-web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "web"}}}}
	bad := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "bad"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Sideways"}}}
	a.clusterViewed(policy.NewClusterView([]networkingv1.NetworkPolicy{isolate, bad}, nil,
		[]policy.Pod{{Namespace: "x", Name: "a", IP: ip, Labels: map[string]string{"role": "web"}}}))
	select {
	case <-a.kick:
	default:
		t.Error("a view did not ask for a reconcile")
	}
	// What CNI_ARGS told the agent: no labels; the view brings them.
	c := a.compileKubernetes([]policy.Pod{{Namespace: "x", Name: "a", IP: ip, HostIf: "lmxa"}}, nil)
	if len(c.Pods) != 1 || c.Pods[0].Ingress == nil || c.Pods[0].Egress != nil {
		t.Fatalf("compiled pods %+v, want x/a isolated for ingress only", c.Pods)
	}
	st := a.policyStatus()
	if !slices.Equal(st.Policies, []string{"x/isolate-web"}) || !strings.Contains(st.Error, "NetworkPolicy x/bad") {
		t.Errorf("status: policies %v, error %q", st.Policies, st.Error)
	}
}

// TestKubernetesWatchers: a pod of this node just published is sent at
// once to the nodes whose policies from the API name it, by the labels of
// its Pod object (its record has none under this source). The view names
// the node of a pod only while it awaits its address; after, the address
// says it, by the peer subnet that holds it.
func TestKubernetesWatchers(t *testing.T) {
	a := &Agent{cfg: &resolved{Config: Config{NodeName: "node2"}}, log: zap.NewNop(),
		policy: &policyState{source: PolicySourceKubernetes}}
	a.lastPodSubnets.Store(&map[string][]netip.Prefix{
		"node1": {netip.MustParsePrefix("10.244.1.0/24")},
		"node3": {netip.MustParsePrefix("10.244.3.0/24")},
		"node4": {netip.MustParsePrefix("10.244.4.0/24")},
	})
	admitsWeb := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-from-web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}}}}
	labels := func(app string) map[string]string { return map[string]string{"app": app} }
	a.clusterViewed(policy.NewClusterView([]networkingv1.NetworkPolicy{admitsWeb}, nil, []policy.Pod{
		{Namespace: "shop", Name: "db-0", IP: netip.MustParseAddr("10.244.1.7"), Labels: labels("db")},
		{Namespace: "shop", Name: "db-1", Node: "node3", Labels: labels("db")},
		{Namespace: "shop", Name: "cache", IP: netip.MustParseAddr("10.244.4.9"), Labels: labels("cache")},
		// Of no peer's subnet: no node to send to.
		{Namespace: "shop", Name: "db-2", IP: netip.MustParseAddr("10.244.9.9"), Labels: labels("db")},
		{Namespace: "shop", Name: "web", Node: "node2", Labels: labels("web")},
		{Namespace: "shop", Name: "worker", Node: "node2", Labels: labels("worker")},
		// A pod of the same name on another node is not this one.
		{Namespace: "shop", Name: "web-elsewhere", Node: "node4", Labels: labels("web")},
	}))
	record := func(name string) policy.Pod {
		return policy.Pod{Namespace: "shop", Name: name, IP: netip.MustParseAddr("10.244.2.5"), Node: "node2"}
	}
	for _, c := range []struct {
		pod  string
		want []string
	}{
		{"web", []string{"node1", "node3"}},
		{"worker", nil},
		{"unknown", nil},
		{"web-elsewhere", nil},
	} {
		got := a.kubernetesWatchers([]policy.Pod{record(c.pod)})
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("watchers of %s: %v, want %v", c.pod, got, c.want)
		}
	}
}
