package policy

import (
	"iter"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
)

// Watchers returns the nodes (at most limit, in no particular order) that
// run a pod, among others, whose policies name one of pods as a peer by
// selector: the nodes whose peer sets, or named-port rules, change when
// those pods come, go or change labels. A rule that admits everyone, or
// address blocks only, names no pod. The policies and namespaces are s's (its pods are
// not read). Pods without a Node, and this node's own (HostIf set), are
// not counted: this node compiles its own pods' rules itself.
//
// A new pod's first packets to a pod elsewhere that admits it by label are
// dropped until that pod's node has the new address in its peer set; the
// agent sends pod news to these nodes at once instead of waiting for a
// gossip round to carry it there.
func Watchers(s Snapshot, pods []Pod, others iter.Seq[Pod], limit int) []string {
	if len(pods) == 0 || limit <= 0 {
		return nil
	}
	c := &compiler{snap: &s, out: &Compiled{}}
	var naming []*networkingv1.NetworkPolicy
	for i := range s.Policies {
		if c.namesAnyAsPeer(&s.Policies[i], pods) {
			naming = append(naming, &s.Policies[i])
		}
	}
	if len(naming) == 0 {
		return nil
	}
	// One pass over the pods, without indexing them: this runs on every
	// ADD, and at 100,000 pods the index cost more than the pass.
	seen := map[string]bool{}
	var out []string
	for w := range others {
		if w.Node == "" || w.Local() || seen[w.Node] {
			continue
		}
		for _, pol := range naming {
			if c.appliesTo(pol, &w) {
				seen[w.Node] = true
				out = append(out, w.Node)
				break
			}
		}
		if len(out) == limit {
			break
		}
	}
	return out
}

// namesAnyAsPeer reports whether a rule of pol in force names one of pods
// as a peer by selector, or, in an egress rule with named ports the
// source resolves, as a destination whose ports it reads.
func (c *compiler) namesAnyAsPeer(pol *networkingv1.NetworkPolicy, pods []Pod) bool {
	ingress, egress := policyTypes(pol)
	if ingress {
		for _, r := range pol.Spec.Ingress {
			if c.selectsAny(pol, r.From, pods) {
				return true
			}
		}
	}
	if egress {
		for _, r := range pol.Spec.Egress {
			if c.snap.NamedPortsKnown && hasNamedPort(r.Ports) {
				// Each destination's named ports are rules of their own:
				// any peer, blocks and rules without peers too, names it.
				if slices.ContainsFunc(pods, func(pod Pod) bool { return c.peersContain(pol, r.To, pod) }) {
					return true
				}
			} else if c.selectsAny(pol, r.To, pods) {
				return true
			}
		}
	}
	return false
}

// selectsAny reports whether a selector among peers selects one of pods.
func (c *compiler) selectsAny(pol *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, pods []Pod) bool {
	for i := range peers {
		p := &peers[i]
		if p.IPBlock == nil && slices.ContainsFunc(pods, func(pod Pod) bool { return c.peerSelects(pol, p, pod) }) {
			return true
		}
	}
	return false
}
