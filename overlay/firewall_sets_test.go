package overlay

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/loomnet/loom/policy"
)

// elements renders a change as "+key"/"-key" strings, keys as the set
// would print them.
func elements(t *testing.T, ch setChange) []string {
	t.Helper()
	render := func(k []byte) string {
		switch {
		case ch.set.Name == setNodes, ch.set.Name == setNodeOverlays, ch.set.Name == setNodes6,
			strings.HasPrefix(ch.set.Name, policySetPrefix):
			a, _ := netip.AddrFromSlice(k)
			return a.String()
		case ch.set.Name == setPodVeths, ch.set.Name == policyIngressMap, ch.set.Name == policyEgressMap:
			return string(trimNUL(k))
		default: // ifname . address
			a, _ := netip.AddrFromSlice(k[16:])
			return string(trimNUL(k[:16])) + "." + a.String()
		}
	}
	var out []string
	for _, e := range ch.del {
		out = append(out, "-"+render(e.Key))
	}
	for _, e := range ch.add {
		if e.VerdictData != nil {
			out = append(out, "+"+render(e.Key)+" jump")
			continue
		}
		out = append(out, "+"+render(e.Key))
	}
	slices.Sort(out)
	return out
}

func trimNUL(b []byte) []byte {
	if i := slices.Index(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func TestSetChanges(t *testing.T) {
	a := netip.MustParseAddr
	pod := func(hostIf, ip string) PodRoute { return PodRoute{HostIf: hostIf, IP: a(ip)} }
	was := FirewallSpec{
		NodeAddrs:    []netip.Addr{a("10.0.0.1"), a("10.0.0.2")},
		NodeOverlays: []netip.Addr{a("10.244.1.0")},
		Pods:         []PodRoute{pod("loomaaa", "10.244.1.2"), pod("loombbb", "10.244.1.3")},
	}
	stale := map[string]PodRoute{"loomccc": pod("loomccc", "10.244.1.4"), "loomddd": pod("loomddd", "10.244.1.5")}
	want := FirewallSpec{
		NodeAddrs:    []netip.Addr{a("10.0.0.2"), a("10.0.0.3"), a("10.0.0.3")},
		NodeOverlays: []netip.Addr{a("10.244.1.0")},
		Pods: []PodRoute{
			pod("loomaaa", "10.244.1.2"), // unchanged
			pod("loomccc", "10.244.1.9"), // stale name back with another address
			pod("loomddd", "10.244.1.5"), // stale name back with its address
			pod("loomeee", "10.244.1.6"), // new
		}, // loombbb left
	}
	changes, newStale := setChanges(was, stale, want)
	got := map[string][]string{}
	for _, ch := range changes {
		got[ch.set.Name] = elements(t, ch)
	}
	expect := map[string][]string{
		setNodes:        {"+10.0.0.3", "-10.0.0.1"},
		setNodeOverlays: nil,
		setPodVeths:     {"+loomccc", "+loomddd", "+loomeee"},
		setPodSources:   {"+loomccc.10.244.1.9", "+loomddd.10.244.1.5", "+loomeee.10.244.1.6", "-loomccc.10.244.1.4"},
	}
	for name, w := range expect {
		if !slices.Equal(got[name], w) {
			t.Errorf("set %s: changes %v, want %v", name, got[name], w)
		}
	}
	if len(newStale) != 1 || newStale["loombbb"] != pod("loombbb", "10.244.1.3") {
		t.Errorf("stale after = %v, want only loombbb", newStale)
	}
	if len(stale) != 2 {
		t.Errorf("setChanges modified the stale map it was given: %v", stale)
	}
}

// The anti-spoof sets' element keys are what the rule looks up: the
// 16-byte interface name, then the 4-byte address.
func TestPodElementsLayout(t *testing.T) {
	v, src := podElements(PodRoute{HostIf: "loom0123456789a", IP: netip.MustParseAddr("10.244.1.2")})
	if len(v.Key) != 16 || len(src.Key) != 20 {
		t.Fatalf("key lengths %d and %d, want 16 and 20", len(v.Key), len(src.Key))
	}
	_, sources := podSets(loomTable())
	if !sources.Concatenation || sources.KeyType.Bytes != 20 {
		t.Fatalf("pod-sources key type %+v, want a 20-byte concatenation", sources.KeyType)
	}
}

// On an IPv6 underlay the member nodes' addresses go to the ip6 table's
// set, and only there; the IPv4 sets keep their own family.
func TestSetChangesIPv6Guard(t *testing.T) {
	a := netip.MustParseAddr
	was := FirewallSpec{VXLANPort: 4789, TunnelIPv6: true, NodeAddrs: []netip.Addr{a("fd00::1"), a("fd00::2")}}
	want := was
	want.NodeAddrs = []netip.Addr{a("fd00::2"), a("fd00::3")}
	got := map[string][]string{}
	changes, _ := setChanges(was, nil, want)
	for _, ch := range changes {
		got[ch.set.Name] = elements(t, ch)
	}
	if w := []string{"+fd00::3", "-fd00::1"}; !slices.Equal(got[setNodes6], w) {
		t.Errorf("set %s: changes %v, want %v", setNodes6, got[setNodes6], w)
	}
	if len(got[setNodes]) != 0 {
		t.Errorf("IPv6 addresses went to the IPv4 set: %v", got[setNodes])
	}
	// Without the guard there is no ip6 table to change.
	want.TunnelIPv6 = false
	changes, _ = setChanges(was, nil, want)
	for _, ch := range changes {
		if ch.set.Name == setNodes6 {
			t.Errorf("changes %s without an IPv6 tunnel", setNodes6)
		}
	}
}

// Other nodes' pods coming and going under policy change only the peer
// sets' addresses: the rules stay, and the change is elements of the sets
// whose addresses differ. A change of which sets exist is a rules change.
func TestPolicyPeerSetChanges(t *testing.T) {
	a := netip.MustParseAddr
	rules := func(sets ...policy.AddrSet) *policy.Compiled {
		return &policy.Compiled{Sets: sets, Pods: []policy.PodRules{{
			Namespace: "default", Name: "db", IP: a("10.244.1.2"), HostIf: "loomaaa", Policies: []string{"default/db"},
			Ingress: &policy.Direction{Allow: []policy.Allow{{Policy: "default/db", Peer: policy.Peer{Set: "peers-0"}}}},
		}}}
	}
	set := func(name string, addrs ...string) policy.AddrSet {
		s := policy.AddrSet{Name: name, Addrs: []netip.Addr{}}
		for _, x := range addrs {
			s.Addrs = append(s.Addrs, a(x))
		}
		return s
	}
	was := FirewallSpec{Policy: rules(set("peers-0", "10.244.2.2", "10.244.3.2"), set("peers-1"))}
	want := FirewallSpec{Policy: rules(set("peers-0", "10.244.3.2", "10.244.4.2"), set("peers-1", "10.244.2.9"))}
	if was.rulesFingerprint() != want.rulesFingerprint() {
		t.Fatal("peer set addresses changed the rules' fingerprint: every remote pod would rewrite the table")
	}
	if len(policyElementChanges(loomTable(), was, want)) == 0 {
		t.Fatal("peer sets with other addresses found the same: the change would never be made")
	}
	if len(policyElementChanges(loomTable(), want, FirewallSpec{Policy: rules(set("peers-0", "10.244.3.2", "10.244.4.2"), set("peers-1", "10.244.2.9"))})) != 0 {
		t.Fatal("peer sets with the same addresses found different")
	}
	got := map[string][]string{}
	changes, _ := setChanges(was, nil, want)
	for _, ch := range changes {
		got[ch.set.Name] = elements(t, ch)
	}
	expect := map[string][]string{
		"pol-peers-0": {"+10.244.4.2", "-10.244.2.2"},
		"pol-peers-1": {"+10.244.2.9"},
	}
	for name, w := range expect {
		if !slices.Equal(got[name], w) {
			t.Errorf("set %s: changes %v, want %v", name, got[name], w)
		}
	}
	// Same addresses: nothing to change.
	same, _ := setChanges(want, nil, FirewallSpec{Policy: rules(set("peers-0", "10.244.3.2", "10.244.4.2"), set("peers-1", "10.244.2.9"))})
	for _, ch := range same {
		if len(ch.add)+len(ch.del) > 0 {
			t.Errorf("set %s changes %v with nothing changed", ch.set.Name, elements(t, ch))
		}
	}
	fewer := FirewallSpec{Policy: rules(set("peers-0", "10.244.3.2"))}
	if fewer.rulesFingerprint() == want.rulesFingerprint() {
		t.Error("a peer set gone left the rules' fingerprint as it was: its rules would stay")
	}
	off := FirewallSpec{}
	if off.rulesFingerprint() == fewer.rulesFingerprint() {
		t.Error("no policy has the fingerprint of a policy set")
	}
}

// This node's pods under policy change the verdict maps' elements, not
// the rules, while the rule set they need is one in force: a pod attached
// with the labels of pods already running (a replica) needs no table
// rewrite, which the ADD waits for. A rule set new to the table is a
// rules change.
func TestPolicyLocalPodChanges(t *testing.T) {
	a := netip.MustParseAddr
	ingress := func(peerSet string) *policy.Direction {
		return &policy.Direction{Allow: []policy.Allow{{Policy: "default/db", Peer: policy.Peer{Set: peerSet}}}}
	}
	pod := func(hostIf, ip string, in *policy.Direction) policy.PodRules {
		return policy.PodRules{Namespace: "default", Name: hostIf, IP: a(ip), HostIf: hostIf, Policies: []string{"default/db"}, Ingress: in}
	}
	spec := func(pods ...policy.PodRules) FirewallSpec {
		return FirewallSpec{Policy: &policy.Compiled{Sets: []policy.AddrSet{{Name: "peers-0", Addrs: []netip.Addr{}}, {Name: "peers-1", Addrs: []netip.Addr{}}}, Pods: pods}}
	}
	one := spec(pod("loomaaa", "10.244.1.2", ingress("peers-0")))
	two := spec(pod("loomaaa", "10.244.1.2", ingress("peers-0")), pod("loombbb", "10.244.1.3", ingress("peers-0")))
	if one.rulesFingerprint() != two.rulesFingerprint() {
		t.Fatal("a pod with the rules of one in force changed the rules' fingerprint: its ADD would rewrite the table")
	}
	if len(policyElementChanges(loomTable(), one, two)) == 0 {
		t.Fatal("a pod more found no element to change")
	}
	changes := func(was, want FirewallSpec) map[string][]string {
		got := map[string][]string{}
		cs, _ := setChanges(was, nil, want)
		for _, ch := range cs {
			if e := elements(t, ch); len(e) > 0 {
				got[ch.set.Name] = e
			}
		}
		return got
	}
	if got, want := changes(one, two), map[string][]string{policyIngressMap: {"+loombbb jump"}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("pod attached: changes %v, want %v", got, want)
	}
	left := spec(pod("loombbb", "10.244.1.3", ingress("peers-0")))
	if left.rulesFingerprint() != two.rulesFingerprint() {
		t.Fatal("a pod gone while another keeps its rule set changed the rules' fingerprint")
	}
	if got, want := changes(two, left), map[string][]string{policyIngressMap: {"-loomaaa"}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("pod gone: changes %v, want %v", got, want)
	}
	// Relabelled to the rules of another pod running: the veth's entry
	// moves to that chain, deleted and added in one batch.
	three := spec(pod("loomaaa", "10.244.1.2", ingress("peers-0")), pod("loombbb", "10.244.1.3", ingress("peers-0")), pod("loomccc", "10.244.1.4", ingress("peers-1")))
	swapped := spec(pod("loomaaa", "10.244.1.2", ingress("peers-0")), pod("loombbb", "10.244.1.3", ingress("peers-1")), pod("loomccc", "10.244.1.4", ingress("peers-1")))
	if three.rulesFingerprint() != swapped.rulesFingerprint() {
		t.Fatal("a pod relabelled to rules in force changed the rules' fingerprint")
	}
	if got, want := changes(three, swapped), map[string][]string{policyIngressMap: {"+loombbb jump", "-loombbb"}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("pod relabelled: changes %v, want %v", got, want)
	}
	// Relabelled to rules of their own: a new chain.
	moved := spec(pod("loomaaa", "10.244.1.2", ingress("peers-0")), pod("loombbb", "10.244.1.3", ingress("peers-1")))
	if moved.rulesFingerprint() == two.rulesFingerprint() {
		t.Fatal("a rule set new to the table left the rules' fingerprint as it was: its chain would never be made")
	}
	// Back to the chain in force, from one that goes: the chain going is a
	// rules change too.
	if moved.rulesFingerprint() == one.rulesFingerprint() {
		t.Fatal("a chain gone left the rules' fingerprint as it was")
	}
}
