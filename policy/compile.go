package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Compile resolves the snapshot's policies against its pods and returns
// the rules for this node's pods (those with a HostIf). Policies are
// expected to have passed Validate; anything that still cannot be
// resolved matches nothing and is reported in Warnings, so a bad policy
// never opens more than it says.
func Compile(s Snapshot) *Compiled {
	c := &compiler{snap: &s, sets: map[string]*AddrSet{}, out: &Compiled{}}
	// The snapshot's pods are read where they are, grouped by namespace,
	// not sorted: in a large fabric cloning and sorting them all was half
	// of a compile. Only what the output's order depends on is sorted:
	// this node's pods, whose order names the peer sets.
	c.nsPods = podsByNamespace(s.Pods)
	var local []Pod
	for _, pod := range s.Pods {
		if pod.Local() {
			local = append(local, pod)
		}
	}
	sortPods(local)
	policies := slices.Clone(s.Policies)
	slices.SortFunc(policies, func(a, b networkingv1.NetworkPolicy) int {
		return strings.Compare(policyName(&a), policyName(&b))
	})
	// Pods that the same policies select get the same rules, unless an
	// ingress rule names a port, which each pod resolves on its own: the
	// rules are made once and shared (replicas of a workload, hundreds on
	// a node, each used to make them again, and the data plane then
	// hashed each copy to name its chain).
	namedIngress := make([]bool, len(policies))
	for i := range policies {
		namedIngress[i] = hasNamedIngressPort(&policies[i])
	}
	shared := map[string]*PodRules{}
	var selecting []int
	var key []byte
	for _, pod := range local {
		selecting, key = selecting[:0], key[:0]
		perPod := false
		for i := range policies {
			pol := &policies[i]
			if !c.appliesTo(pol, &pod) {
				continue
			}
			selecting = append(selecting, i)
			key = strconv.AppendInt(append(key, ','), int64(i), 10)
			perPod = perPod || namedIngress[i]
		}
		if len(selecting) == 0 {
			continue
		}
		if same, ok := shared[string(key)]; ok && !perPod {
			c.out.Pods = append(c.out.Pods, PodRules{Namespace: pod.Namespace, Name: pod.Name, IP: pod.IP, HostIf: pod.HostIf,
				Policies: same.Policies, Ingress: same.Ingress, Egress: same.Egress})
			continue
		}
		rules := &PodRules{Namespace: pod.Namespace, Name: pod.Name, IP: pod.IP, HostIf: pod.HostIf}
		for _, i := range selecting {
			pol := &policies[i]
			rules.Policies = append(rules.Policies, policyName(pol))
			ingress, egress := policyTypes(pol)
			if ingress {
				if rules.Ingress == nil {
					rules.Ingress = &Direction{Allow: []Allow{}}
				}
				for _, r := range pol.Spec.Ingress {
					rules.Ingress.Allow = append(rules.Ingress.Allow, c.rule(pol, pod, r.From, r.Ports, true)...)
				}
			}
			if egress {
				if rules.Egress == nil {
					rules.Egress = &Direction{Allow: []Allow{}}
				}
				for _, r := range pol.Spec.Egress {
					rules.Egress.Allow = append(rules.Egress.Allow, c.rule(pol, pod, r.To, r.Ports, false)...)
				}
			}
		}
		if !perPod {
			shared[string(key)] = rules
		}
		c.out.Pods = append(c.out.Pods, *rules)
	}
	slices.SortFunc(c.out.Pods, func(a, b PodRules) int { return strings.Compare(a.HostIf, b.HostIf) })
	for _, set := range c.sets {
		c.out.Sets = append(c.out.Sets, *set)
	}
	slices.SortFunc(c.out.Sets, func(a, b AddrSet) int { return strings.Compare(a.Name, b.Name) })
	return c.out
}

type compiler struct {
	snap *Snapshot
	// nsPods are the indexes in snap.Pods of each namespace's pods.
	nsPods map[string][]int32
	// sorted is every pod in sortPods order, made on first use (see
	// sortedPods).
	sorted []Pod
	// sets are keyed by the canonical form of the selector they resolve
	// (see selectorKey); keys holds each peer's, by address.
	sets   map[string]*AddrSet
	keys   map[*networkingv1.NetworkPolicyPeer]string
	out    *Compiled
	warned map[string]bool
	// parsed caches selectors by address: the same selector is matched
	// against every pod, and parsing dominates otherwise.
	parsed map[*metav1.LabelSelector]labels.Selector
	// nsLabels caches each namespace's labels with its name label.
	nsLabels map[string]labels.Set
}

func policyName(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name }

// hasNamedIngressPort reports whether an ingress rule of p names a port,
// which each selected pod resolves to a number of its own.
func hasNamedIngressPort(p *networkingv1.NetworkPolicy) bool {
	return slices.ContainsFunc(p.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool { return hasNamedPort(r.Ports) })
}

// hasNamedPort reports whether a rule's ports name one.
func hasNamedPort(ports []networkingv1.NetworkPolicyPort) bool {
	return slices.ContainsFunc(ports, func(port networkingv1.NetworkPolicyPort) bool {
		return port.Port != nil && port.Port.Type == intstr.String
	})
}

// policyTypes applies the API's defaulting: Ingress always, Egress when
// the policy has egress rules, unless policyTypes says otherwise.
func policyTypes(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func (c *compiler) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	if !c.warned[msg] {
		c.warned[msg] = true
		c.out.Warnings = append(c.out.Warnings, msg)
	}
}

// selects reports whether sel matches set; a selector that does not parse
// matches nothing.
func (c *compiler) selects(sel *metav1.LabelSelector, set map[string]string) bool {
	s, ok := c.parsed[sel]
	if !ok {
		var err error
		if s, err = metav1.LabelSelectorAsSelector(sel); err != nil {
			c.warn("label selector %v: %v", sel, err)
			s = labels.Nothing()
		}
		if c.parsed == nil {
			c.parsed = map[*metav1.LabelSelector]labels.Selector{}
		}
		c.parsed[sel] = s
	}
	return s.Matches(labels.Set(set))
}

// namespaceLabels is Snapshot.namespaceLabels, computed once per namespace.
func (c *compiler) namespaceLabels(ns string) labels.Set {
	if l, ok := c.nsLabels[ns]; ok {
		return l
	}
	if c.nsLabels == nil {
		c.nsLabels = map[string]labels.Set{}
	}
	l := labels.Set(c.snap.namespaceLabels(ns))
	c.nsLabels[ns] = l
	return l
}

// rule turns one ingress or egress rule of pol, applied to pod, into allow
// entries: one per peer for numeric ports, and for named ports the ports
// resolved on the pod (ingress) or on each destination pod (egress).
func (c *compiler) rule(pol *networkingv1.NetworkPolicy, pod Pod, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, ingress bool) []Allow {
	name := policyName(pol)
	var numeric []PortRange
	type named struct{ proto, name string }
	var names []named
	for _, p := range ports {
		proto := string(corev1.ProtocolTCP)
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		switch {
		case p.Port == nil:
			numeric = append(numeric, PortRange{Protocol: proto})
		case p.Port.Type == intstr.Int:
			r := PortRange{Protocol: proto, Port: uint16(p.Port.IntVal)}
			if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
				r.EndPort = uint16(*p.EndPort)
			}
			numeric = append(numeric, r)
		default:
			if !c.snap.NamedPortsKnown {
				c.warn("policy %s: named port %q cannot be resolved without the kubernetes policy source; it matches nothing", name, p.Port.StrVal)
				continue
			}
			names = append(names, named{proto, p.Port.StrVal})
		}
	}
	if len(ports) > 0 && len(numeric) == 0 && len(names) == 0 {
		return nil // every port entry was unresolvable: allow nothing
	}
	var resolvedPeers []Peer
	if len(peers) == 0 {
		resolvedPeers = []Peer{{}}
	}
	for i := range peers {
		if p, ok := c.peer(pol, &peers[i]); ok {
			resolvedPeers = append(resolvedPeers, p)
		}
	}
	// Peers with the numeric ports, plus (ingress) the named ports as
	// this pod defines them.
	portList := slices.Clone(numeric)
	if ingress {
		for _, n := range names {
			if r, ok := pod.namedPort(n.proto, n.name); ok {
				portList = append(portList, r)
			}
		}
	}
	var out []Allow
	if len(ports) == 0 || len(portList) > 0 {
		for _, p := range resolvedPeers {
			out = append(out, Allow{Policy: name, Peer: p, Ports: portList})
		}
	}
	if !ingress && len(names) > 0 {
		// Named ports of the destination: each peer pod that has one.
		for _, dst := range c.sortedPods() {
			if !c.peersContain(pol, peers, dst) {
				continue
			}
			for _, n := range names {
				if r, ok := dst.namedPort(n.proto, n.name); ok {
					out = append(out, Allow{Policy: name,
						Peer:  Peer{Prefixes: []netip.Prefix{netip.PrefixFrom(dst.IP, 32)}},
						Ports: []PortRange{r}})
				}
			}
		}
	}
	return out
}

// peersContain reports whether pod is among the peers (empty = everyone).
func (c *compiler) peersContain(pol *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, pod Pod) bool {
	if len(peers) == 0 {
		return true
	}
	for i := range peers {
		p := &peers[i]
		if p.IPBlock != nil {
			blocks, _ := blockPrefixes(p.IPBlock)
			for _, b := range blocks {
				if b.Contains(pod.IP) {
					return true
				}
			}
			continue
		}
		if c.peerSelects(pol, p, pod) {
			return true
		}
	}
	return false
}

// podsByNamespace indexes pods by namespace.
func podsByNamespace(pods []Pod) map[string][]int32 {
	out := map[string][]int32{}
	for i := range pods {
		out[pods[i].Namespace] = append(out[pods[i].Namespace], int32(i))
	}
	return out
}

// sortedPods is every pod in sortPods order, for output that lists pods
// one by one (named ports of egress peers), which must not depend on the
// snapshot's order.
func (c *compiler) sortedPods() []Pod {
	if c.sorted == nil {
		c.sorted = slices.Clone(c.snap.Pods)
		sortPods(c.sorted)
	}
	return c.sorted
}

// peerNamespaces are the namespaces with pods whose pods a peer may
// select: the policy's own, or those its namespace selector matches.
func (c *compiler) peerNamespaces(pol *networkingv1.NetworkPolicy, p *networkingv1.NetworkPolicyPeer) []string {
	if p.NamespaceSelector == nil {
		return []string{pol.Namespace}
	}
	var out []string
	for ns := range c.nsPods {
		if c.selects(p.NamespaceSelector, c.namespaceLabels(ns)) {
			out = append(out, ns)
		}
	}
	return out
}

// peerSelects reports whether a peer of pol selects pod.
func (c *compiler) peerSelects(pol *networkingv1.NetworkPolicy, p *networkingv1.NetworkPolicyPeer, pod Pod) bool {
	if p.NamespaceSelector == nil {
		if pod.Namespace != pol.Namespace {
			return false
		}
	} else if !c.selects(p.NamespaceSelector, c.namespaceLabels(pod.Namespace)) {
		return false
	}
	return c.podSelectorMatches(p, pod.Labels)
}

// appliesTo reports whether pol selects pod for its rules: a pod of its
// namespace that its pod selector matches.
func (c *compiler) appliesTo(pol *networkingv1.NetworkPolicy, pod *Pod) bool {
	return pol.Namespace == pod.Namespace && c.selects(&pol.Spec.PodSelector, pod.Labels)
}

// podSelectorMatches reports whether a peer's pod selector (none: every
// pod) matches a pod's labels, in a namespace the peer selects.
func (c *compiler) podSelectorMatches(p *networkingv1.NetworkPolicyPeer, labels map[string]string) bool {
	return p.PodSelector == nil || c.selects(p.PodSelector, labels)
}

// peer resolves one peer to a set of pod addresses or address blocks.
func (c *compiler) peer(pol *networkingv1.NetworkPolicy, p *networkingv1.NetworkPolicyPeer) (Peer, bool) {
	if p.IPBlock != nil {
		blocks, err := blockPrefixes(p.IPBlock)
		if err != nil {
			c.warn("policy %s: %v; the block matches nothing", policyName(pol), err)
			return Peer{}, false
		}
		if len(blocks) == 0 {
			return Peer{}, false
		}
		return Peer{Prefixes: blocks}, true
	}
	key, ok := c.keys[p]
	if !ok {
		// Formatting a selector parses it again: once per peer, not
		// once per local pod it applies to.
		key = selectorKey(pol, p)
		if c.keys == nil {
			c.keys = map[*networkingv1.NetworkPolicyPeer]string{}
		}
		c.keys[p] = key
	}
	set, ok := c.sets[key]
	if !ok {
		set = &AddrSet{Name: fmt.Sprintf("peers-%d", len(c.sets)), Addrs: []netip.Addr{}}
		// Only the pods of the namespaces the peer can select are read:
		// in a large fabric most selectors name a namespace or a few, and
		// matching every pod against every selector dominated a compile.
		for _, ns := range c.peerNamespaces(pol, p) {
			for _, i := range c.nsPods[ns] {
				pod := &c.snap.Pods[i]
				if c.podSelectorMatches(p, pod.Labels) {
					set.Addrs = append(set.Addrs, pod.IP)
				}
			}
		}
		slices.SortFunc(set.Addrs, netip.Addr.Compare)
		set.Addrs = slices.Compact(set.Addrs)
		c.sets[key] = set
	}
	return Peer{Set: set.Name}, true
}

// selectorKey is the canonical identity of a peer selector: peers with the
// same key select the same pods and share one set.
func selectorKey(pol *networkingv1.NetworkPolicy, p *networkingv1.NetworkPolicyPeer) string {
	var b strings.Builder
	if p.NamespaceSelector == nil {
		fmt.Fprintf(&b, "ns=%s;", pol.Namespace)
	} else {
		fmt.Fprintf(&b, "nssel=%s;", metav1.FormatLabelSelector(p.NamespaceSelector))
	}
	if p.PodSelector == nil {
		b.WriteString("pods=all")
	} else {
		fmt.Fprintf(&b, "podsel=%s", metav1.FormatLabelSelector(p.PodSelector))
	}
	return b.String()
}
