package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Compiled is a policy set resolved against the pods it concerns: for each
// local pod that some policy isolates, what it may send and receive. The
// overlay package programs it into nftables; loomctl policy shows it.
type Compiled struct {
	// Sets are the addresses of the pods each peer selector matches,
	// sorted by name; rules refer to them by name so a pod coming or going
	// changes a set, not the rules.
	Sets []AddrSet `json:"sets"`
	// Pods are this node's pods that at least one policy selects, sorted
	// by host interface.
	Pods []PodRules `json:"pods"`
	// Warnings are parts of policies that could not be enforced as
	// written (e.g. named ports without the Kubernetes source).
	Warnings []string `json:"warnings,omitempty"`
}

// AddrSet is a named set of pod addresses.
type AddrSet struct {
	Name  string       `json:"name"`
	Addrs []netip.Addr `json:"addrs"`
}

// PodRules is the verdict logic for one local pod.
type PodRules struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	IP        netip.Addr `json:"ip"`
	HostIf    string     `json:"hostIf"`
	// Policies are the policies selecting the pod, as namespace/name.
	Policies []string `json:"policies"`
	// Ingress and Egress are nil when no policy isolates the pod in that
	// direction: everything is allowed.
	Ingress *Direction `json:"ingress,omitempty"`
	Egress  *Direction `json:"egress,omitempty"`
}

// Direction lists what is allowed in one direction of an isolated pod;
// everything else is dropped. An empty list denies all.
type Direction struct {
	Allow []Allow `json:"allow"`
}

// Allow is one allowed combination of peer and ports.
type Allow struct {
	// Policy is the namespace/name of the policy this comes from.
	Policy string `json:"policy"`
	// Peer is what the other end must be; a zero Peer is anyone.
	Peer Peer `json:"peer"`
	// Ports are the allowed destination ports; empty means all.
	Ports []PortRange `json:"ports,omitempty"`
}

// PortsText is the allowed ports for people: "all ports", or the ranges
// separated by spaces ("tcp/80-81 udp/53").
func (a Allow) PortsText() string {
	if len(a.Ports) == 0 {
		return "all ports"
	}
	ps := make([]string, len(a.Ports))
	for i, r := range a.Ports {
		ps[i] = r.String()
	}
	return strings.Join(ps, " ")
}

// Peer is the other end of a connection: pods in a named set, or address
// blocks, or (both empty) anyone.
type Peer struct {
	Set      string         `json:"set,omitempty"`
	Prefixes []netip.Prefix `json:"prefixes,omitempty"`
}

// Any reports whether the peer matches every address.
func (p Peer) Any() bool { return p.Set == "" && p.Prefixes == nil }

// PortRange is a protocol and an inclusive destination port range;
// Port 0 means every port of the protocol.
type PortRange struct {
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port,omitempty"`
	EndPort  uint16 `json:"endPort,omitempty"`
}

func (r PortRange) String() string {
	switch {
	case r.Port == 0:
		return strings.ToLower(r.Protocol)
	case r.EndPort > r.Port:
		return fmt.Sprintf("%s/%d-%d", strings.ToLower(r.Protocol), r.Port, r.EndPort)
	default:
		return fmt.Sprintf("%s/%d", strings.ToLower(r.Protocol), r.Port)
	}
}

func (p Peer) String() string {
	switch {
	case p.Any():
		return "any"
	case p.Set != "":
		return "@" + p.Set
	default:
		parts := make([]string, len(p.Prefixes))
		for i, pf := range p.Prefixes {
			parts[i] = pf.String()
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
}

// Render writes the compiled form as text, one line per rule, in the
// order the rules are evaluated. Golden tests and `loomctl policy` use it.
func (c *Compiled) Render() string {
	var b strings.Builder
	for _, s := range c.Sets {
		addrs := make([]string, len(s.Addrs))
		for i, a := range s.Addrs {
			addrs[i] = a.String()
		}
		fmt.Fprintf(&b, "set %s = {%s}\n", s.Name, strings.Join(addrs, ", "))
	}
	for _, p := range c.Pods {
		fmt.Fprintf(&b, "pod %s/%s %s via %s, selected by %s\n", p.Namespace, p.Name, p.IP, p.HostIf, strings.Join(p.Policies, ", "))
		for _, d := range []struct {
			name, peer string
			dir        *Direction
		}{{"ingress", "from", p.Ingress}, {"egress", "to", p.Egress}} {
			if d.dir == nil {
				fmt.Fprintf(&b, "  %s: not isolated\n", d.name)
				continue
			}
			fmt.Fprintf(&b, "  %s: isolated\n", d.name)
			for _, a := range d.dir.Allow {
				fmt.Fprintf(&b, "    allow %s %s on %s (%s)\n", d.peer, a.Peer, a.PortsText(), a.Policy)
			}
			fmt.Fprintf(&b, "    drop\n")
		}
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}
