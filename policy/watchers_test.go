package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func appIs(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

// watcherPods: db pods on nodes b and c, a cache pod on d, web pods on
// b and without a node, and this node's web pod.
func watcherPods() []Pod {
	pod := func(ns, name, app, node string, last byte) Pod {
		return Pod{Namespace: ns, Name: name, IP: netip.AddrFrom4([4]byte{10, 244, 9, last}), Node: node,
			Labels: map[string]string{"app": app}}
	}
	local := pod("prod", "web-0", "web", "", 2)
	local.HostIf = "loom0"
	return []Pod{local, pod("prod", "db-1", "db", "b", 3), pod("prod", "db-2", "db", "c", 4),
		pod("prod", "cache", "cache", "d", 5), pod("prod", "web-1", "web", "b", 6), pod("prod", "web-2", "web", "", 7)}
}

func TestWatchers(t *testing.T) {
	web := Pod{Namespace: "prod", Name: "web-9", IP: netip.MustParseAddr("10.244.0.9"), Labels: map[string]string{"app": "web"}}
	other := web
	other.Labels = map[string]string{"app": "other"}
	db := Pod{Namespace: "prod", Name: "db-9", IP: netip.MustParseAddr("10.244.0.10"), Labels: map[string]string{"app": "db"}}
	elsewhere := web
	elsewhere.Namespace = "dev"
	ingress := func(sel *metav1.LabelSelector, from ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "in"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel, Ingress: []networkingv1.NetworkPolicyIngressRule{{From: from}}}}
	}
	egress := func(sel *metav1.LabelSelector, to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "out"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: to, Ports: ports}}}}
	}
	named := networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}
	block := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16"}}
	for _, tc := range []struct {
		name       string
		policy     networkingv1.NetworkPolicy
		pods       []Pod
		namedPorts bool
		want       []string
	}{
		{"db admits web: the db pods' nodes", ingress(appIs("db"), networkingv1.NetworkPolicyPeer{PodSelector: appIs("web")}), []Pod{web}, false, []string{"b", "c"}},
		{"a pod no policy names", ingress(appIs("db"), networkingv1.NetworkPolicyPeer{PodSelector: appIs("web")}), []Pod{other}, false, nil},
		{"relabelled away: who selected it before", ingress(appIs("db"), networkingv1.NetworkPolicyPeer{PodSelector: appIs("web")}), []Pod{other, web}, false, []string{"b", "c"}},
		{"a pod of another namespace", ingress(appIs("db"), networkingv1.NetworkPolicyPeer{PodSelector: appIs("web")}), []Pod{elsewhere}, false, nil},
		{"by namespace selector", ingress(appIs("db"), networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: appIs("web")}), []Pod{elsewhere}, false, []string{"b", "c"}},
		{"everyone admitted: no set to change", ingress(appIs("db")), []Pod{web}, false, nil},
		{"address blocks: no set to change", ingress(appIs("db"), block), []Pod{web}, false, nil},
		{"egress of web to db: the web pods' nodes", egress(appIs("web"), []networkingv1.NetworkPolicyPeer{{PodSelector: appIs("db")}}), []Pod{db}, false, []string{"b"}},
		{"egress rules do not name ingress peers", egress(appIs("web"), []networkingv1.NetworkPolicyPeer{{PodSelector: appIs("db")}}), []Pod{web}, false, nil},
		{"egress to a named port: every destination", egress(appIs("web"), nil, named), []Pod{db}, true, []string{"b"}},
		{"egress to a named port the source cannot resolve", egress(appIs("web"), nil, named), []Pod{db}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := Snapshot{Policies: []networkingv1.NetworkPolicy{tc.policy}, Pods: watcherPods(), NamedPortsKnown: tc.namedPorts}
			got := Watchers(snap, tc.pods, slices.Values(snap.Pods), 32)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Watchers = %v, want %v", got, tc.want)
			}
		})
	}
	snap := Snapshot{Policies: []networkingv1.NetworkPolicy{ingress(appIs("db"), networkingv1.NetworkPolicyPeer{PodSelector: appIs("web")})}, Pods: watcherPods()}
	if got := Watchers(snap, []Pod{web}, slices.Values(snap.Pods), 1); len(got) != 1 {
		t.Fatalf("Watchers with limit 1 = %v, want one node", got)
	}
}

// TestWatchersMissNoNode compiles each node's policies with and without a
// new pod in random fabrics: every node whose compiled rules change must
// be among the new pod's watchers, or its first packets to that node's
// pods wait for the gossip.
func TestWatchersMissNoNode(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	namespaces := []string{"a", "b", "c"}
	nodes := []string{"self", "n1", "n2", "n3"}
	pick := func(of ...string) string { return of[rng.IntN(len(of))] }
	tcp := corev1.ProtocolTCP
	randomPeer := func() networkingv1.NetworkPolicyPeer {
		var peer networkingv1.NetworkPolicyPeer
		switch rng.IntN(5) {
		case 0:
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": pick("red", "blue")}}
		case 1:
			peer.NamespaceSelector = &metav1.LabelSelector{}
		case 2:
			return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16"}}
		}
		if rng.IntN(3) > 0 {
			peer.PodSelector = appIs(pick("web", "db", "cache"))
		}
		return peer
	}
	randomPorts := func() []networkingv1.NetworkPolicyPort {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			port := intstr.FromInt32(80)
			return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
		}
		port := intstr.FromString("http")
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
	}
	changes := 0
	for round := range 300 {
		snap := Snapshot{Namespaces: map[string]map[string]string{}, NamedPortsKnown: rng.IntN(2) == 0}
		for _, ns := range namespaces {
			snap.Namespaces[ns] = map[string]string{"team": pick("red", "blue")}
		}
		for i := range 24 {
			snap.Pods = append(snap.Pods, Pod{Namespace: pick(namespaces...), Name: fmt.Sprintf("p%d", i),
				IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}), Node: nodes[i%len(nodes)],
				Labels:     map[string]string{"app": pick("web", "db", "cache")},
				NamedPorts: map[string]NamedPort{"http": {Protocol: "TCP", Port: 8080}}})
		}
		for i := range 4 {
			pol := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol%d", i), Namespace: pick(namespaces...)},
				Spec: networkingv1.NetworkPolicySpec{PodSelector: *appIs(pick("web", "db", "cache"))}}
			if rng.IntN(3) > 0 {
				pol.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{randomPeer()}, Ports: randomPorts()}}
			}
			if rng.IntN(2) == 0 {
				pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
				pol.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: randomPorts()}}
				if rng.IntN(4) > 0 {
					pol.Spec.Egress[0].To = []networkingv1.NetworkPolicyPeer{randomPeer()}
				}
			}
			snap.Policies = append(snap.Policies, pol)
		}
		newPod := Pod{Namespace: pick(namespaces...), Name: "new", IP: netip.MustParseAddr("10.244.0.2"),
			Labels: map[string]string{"app": pick("web", "db", "cache")}, NamedPorts: map[string]NamedPort{"http": {Protocol: "TCP", Port: 8080}}}
		// Watchers reads the fabric as the new pod's node sees it.
		mine := snap
		mine.Pods = nil
		for _, p := range snap.Pods {
			if p.Node == "self" {
				p.HostIf, p.Node = "loom-"+p.Name, ""
			}
			mine.Pods = append(mine.Pods, p)
		}
		local := newPod
		local.HostIf = "loom-new"
		mine.Pods = append(mine.Pods, local)
		watchers := Watchers(mine, []Pod{newPod}, slices.Values(mine.Pods), len(nodes))
		for _, node := range nodes[1:] {
			// The node's view: its pods are the local ones.
			view := func(with bool) string {
				v := snap
				v.Pods = nil
				for _, p := range snap.Pods {
					if p.Node == node {
						p.HostIf = "loom-" + p.Name
					}
					v.Pods = append(v.Pods, p)
				}
				if with {
					p := newPod
					p.Node = "self"
					v.Pods = append(v.Pods, p)
				}
				return Compile(v).Render()
			}
			if view(false) == view(true) {
				continue
			}
			changes++
			if !slices.Contains(watchers, node) {
				t.Fatalf("round %d: node %s's rules change with the new pod %+v, but its watchers are %v; policies %+v",
					round, node, newPod, watchers, snap.Policies)
			}
		}
	}
	if changes < 50 {
		t.Fatalf("only %d nodes' rules changed with a new pod in 300 fabrics: the test checks too little", changes)
	}
}

// TestPublicationNamesThePods: what a publish changed names the pods as
// peers' policies knew them and will know them, so that both audiences
// hear of it: a new pod, a relabelled pod before and after, a deleted pod
// as it was.
func TestPublicationNamesThePods(t *testing.T) {
	d := NewDirectory("a", nil)
	labels := func(pods []PodRecord) []string {
		var out []string
		for _, p := range pods {
			out = append(out, p.IP.String()+"="+p.Labels["app"])
		}
		slices.Sort(out)
		return out
	}
	for _, step := range []struct {
		name       string
		local      []PodRecord
		updates    int
		wantLabels []string
	}{
		{"new", []PodRecord{rec("", "10.244.0.2", map[string]string{"app": "web"})}, 1, []string{"10.244.0.2=web"}},
		{"unchanged", []PodRecord{rec("", "10.244.0.2", map[string]string{"app": "web"})}, 0, nil},
		{"relabelled", []PodRecord{rec("", "10.244.0.2", map[string]string{"app": "db"})}, 1, []string{"10.244.0.2=db", "10.244.0.2=web"}},
		{"deleted", nil, 1, []string{"10.244.0.2=db"}},
	} {
		pub := d.PublishChanges(step.local, d.Mark())
		if len(pub.Updates) != step.updates || !slices.Equal(labels(pub.Pods), step.wantLabels) {
			t.Fatalf("%s: %d updates for pods %v, want %d for %v", step.name, len(pub.Updates), labels(pub.Pods), step.updates, step.wantLabels)
		}
	}
}

// TestPublishedPodsOutliveOlderLists: a pod published on its own (given
// its address, or relabelled) is not taken back by a publish of the local
// pods listed before it, which would tell every node it is gone (and
// have them delete its flows); a list read after it is the truth again.
func TestPublishedPodsOutliveOlderLists(t *testing.T) {
	d := NewDirectory("a", nil)
	a := rec("", "10.244.0.2", map[string]string{"app": "web"})
	b := rec("", "10.244.0.3", map[string]string{"app": "web"})
	d.Publish([]PodRecord{a})
	before := d.Mark()
	if pub := d.PublishPod(b); len(pub.Updates) != 1 {
		t.Fatalf("publishing a new pod made %d updates, want 1", len(pub.Updates))
	}
	if pub := d.PublishChanges([]PodRecord{a}, before); len(pub.Updates) != 0 {
		t.Fatalf("a list read before the new pod made %d updates (%v), want none", len(pub.Updates), pub.Pods)
	}
	before = d.Mark()
	relabelled := a
	relabelled.Labels = map[string]string{"app": "db"}
	d.PublishPod(relabelled)
	if pub := d.PublishChanges([]PodRecord{a, b}, before); len(pub.Updates) != 0 {
		t.Fatalf("a list read before the relabel made %d updates (%v), want none", len(pub.Updates), pub.Pods)
	}
	if got := d.Local(); !slices.EqualFunc(got, []PodRecord{relabelled, b}, func(x, y PodRecord) bool {
		return x.IP == y.IP && x.Labels["app"] == y.Labels["app"]
	}) {
		t.Fatalf("this node's records are %v, want the relabelled pod and the new one", got)
	}
	// Read after both: b is gone now.
	if pub := d.PublishChanges([]PodRecord{relabelled}, d.Mark()); len(pub.Updates) != 1 || pub.Pods[0].IP != b.IP {
		t.Fatalf("a list read after them made updates for %v, want b's deletion", pub.Pods)
	}
}

// Local returns this node's live records by address, for tests.
func (d *Directory) Local() []PodRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []PodRecord
	for _, r := range d.records[d.self] {
		if !r.Deleted {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y PodRecord) int { return x.IP.Compare(y.IP) })
	return out
}
