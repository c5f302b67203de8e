package policy

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// truthPods is the x/y/z × a/b/c pod grid of the upstream e2e suite; the
// pods of namespace x run on this node.
func truthPods() []Pod {
	var pods []Pod
	for i, ns := range []string{"x", "y", "z"} {
		for j, name := range []string{"a", "b", "c"} {
			p := Pod{Namespace: ns, Name: name, IP: netip.AddrFrom4([4]byte{10, 244, byte(i), byte(10 + j)}),
				Labels: map[string]string{"pod": name}}
			if ns == "x" {
				p.HostIf = fmt.Sprintf("lm%s%s", ns, name)
			}
			pods = append(pods, p)
		}
	}
	return pods
}

func truthNamespaces() map[string]map[string]string {
	return map[string]map[string]string{"x": {"ns": "x"}, "y": {"ns": "y"}, "z": {"ns": "z"}}
}

// TestCompileGolden compiles each policy file of testdata/golden against
// the pod grid and compares the rendered rules with the .golden file next
// to it (go test ./policy -update rewrites them).
func TestCompileGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "p.yaml"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			ns := truthNamespaces()
			for k, v := range objs.Namespaces {
				ns[k] = v
			}
			got := Compile(Snapshot{Policies: objs.Policies, Namespaces: ns, Pods: truthPods()}).Render()
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("compiled rules differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestBlockPrefixes(t *testing.T) {
	for _, tc := range []struct {
		cidr   string
		except []string
		want   string
	}{
		{"10.0.0.0/24", nil, "[10.0.0.0/24]"},
		{"10.0.0.0/24", []string{"10.0.0.0/25"}, "[10.0.0.128/25]"},
		{"10.0.0.0/30", []string{"10.0.0.1/32"}, "[10.0.0.0/32 10.0.0.2/31]"},
		{"10.0.0.5/24", []string{"10.0.0.0/26", "10.0.0.192/26"}, "[10.0.0.64/26 10.0.0.128/26]"},
	} {
		got, err := blockPrefixes(&ipBlock{CIDR: tc.cidr, Except: tc.except})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s except %v = %v, want %s", tc.cidr, tc.except, got, tc.want)
		}
	}
	if _, err := blockPrefixes(&ipBlock{CIDR: "fd00::/64"}); err == nil {
		t.Error("IPv6 block accepted")
	}
}

// TestCompiledPeerSetsHoldEveryPeer: a peer set holds exactly the pods the
// peer selects, among every pod of the snapshot, whichever order the
// snapshot lists them in. Sets are filled from the pods of the namespaces
// a peer can select, not from every pod; this checks that against
// matching each pod on its own.
func TestCompiledPeerSetsHoldEveryPeer(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	namespaces := []string{"a", "b", "c", "d"}
	pick := func(of ...string) string { return of[rng.IntN(len(of))] }
	for round := range 200 {
		snap := Snapshot{Namespaces: map[string]map[string]string{}}
		for _, ns := range namespaces[:3] { // d has pods but no object
			snap.Namespaces[ns] = map[string]string{"team": pick("red", "blue")}
		}
		for i := range 40 {
			p := Pod{Namespace: pick(namespaces...), Name: fmt.Sprintf("p%d", i),
				IP:     netip.AddrFrom4([4]byte{10, 244, byte(i % 4), byte(2 + i)}),
				Labels: map[string]string{"app": pick("web", "db", "cache")}}
			if i%4 == 0 {
				p.HostIf = fmt.Sprintf("loom%d", i)
			}
			snap.Pods = append(snap.Pods, p)
		}
		peers := map[string]networkingv1.NetworkPolicyPeer{}
		for i := range 6 {
			var peer networkingv1.NetworkPolicyPeer
			switch rng.IntN(4) {
			case 0: // the policy's namespace
			case 1:
				peer.NamespaceSelector = &metav1.LabelSelector{}
			case 2:
				peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": pick("red", "blue")}}
			case 3:
				peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceNameLabel: pick(namespaces...)}}
			}
			if rng.IntN(3) > 0 {
				peer.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": pick("web", "db", "cache")}}
			}
			pol := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol%d", i), Namespace: pick(namespaces...)},
				Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}}}}}
			snap.Policies = append(snap.Policies, pol)
			peers[policyName(&pol)] = peer
		}
		compiled := Compile(snap)
		sets := map[string][]netip.Addr{}
		for _, s := range compiled.Sets {
			sets[s.Name] = s.Addrs
		}
		checked := 0
		for _, pod := range compiled.Pods {
			for _, a := range pod.Ingress.Allow {
				pol := &snap.Policies[slices.IndexFunc(snap.Policies, func(p networkingv1.NetworkPolicy) bool { return policyName(&p) == a.Policy })]
				peer := peers[a.Policy]
				c := &compiler{snap: &snap}
				want := []netip.Addr{}
				for _, p := range snap.Pods {
					if c.peerSelects(pol, &peer, p) {
						want = append(want, p.IP)
					}
				}
				slices.SortFunc(want, netip.Addr.Compare)
				if got := sets[a.Peer.Set]; !slices.Equal(got, want) {
					t.Fatalf("round %d: policy %s peer %+v: set %s holds %v, want %v", round, a.Policy, peer, a.Peer.Set, got, want)
				}
				checked++
			}
		}
		if round == 0 && checked == 0 {
			t.Fatal("the first round compiled no peer set to check")
		}
		shuffled := snap
		shuffled.Pods = slices.Clone(snap.Pods)
		rng.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
		if a, b := compiled.Render(), Compile(shuffled).Render(); a != b {
			t.Fatalf("round %d: the same pods in another order compile differently:\n%s\nagainst\n%s", round, a, b)
		}
	}
}

// Pods that the same policies select share one copy of their rules (the
// data plane names one chain per copy it sees), and each still has its
// own name, address and veth.
func TestReplicasShareRules(t *testing.T) {
	snap := Snapshot{Policies: []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}},
	}}}
	for i := range 3 {
		snap.Pods = append(snap.Pods, Pod{Namespace: "default", Name: fmt.Sprintf("db-%d", i), IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}),
			HostIf: fmt.Sprintf("loom%d", i), Labels: map[string]string{"app": "db"}})
	}
	c := Compile(snap)
	if len(c.Pods) != 3 {
		t.Fatalf("%d pods with rules, want 3", len(c.Pods))
	}
	for i, p := range c.Pods {
		if p.Ingress != c.Pods[0].Ingress {
			t.Errorf("pod %s has a copy of the rules of %s", p.Name, c.Pods[0].Name)
		}
		if p.Name != fmt.Sprintf("db-%d", i) || p.HostIf != fmt.Sprintf("loom%d", i) || p.IP != netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}) {
			t.Errorf("pod %d is %s %s %s", i, p.Name, p.HostIf, p.IP)
		}
	}
}
