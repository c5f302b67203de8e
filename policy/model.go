// Package policy implements Kubernetes NetworkPolicy (networking.k8s.io/v1)
// for Loom: it gathers policies, namespaces and pods from a source (policy
// files or the Kubernetes API), validates them, and compiles them into
// per-pod allow lists that the overlay package turns into nftables rules.
// It touches no kernel state itself.
package policy

import (
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// NamespaceNameLabel is the label Kubernetes puts on every namespace with
// the namespace's own name; Loom adds it the same way so that policies
// written for a cluster work unchanged from files.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// DefaultNamespace is the namespace of pods whose runtime passed none.
const DefaultNamespace = "default"

// Pod is one pod as policies see it.
type Pod struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	IP        netip.Addr        `json:"ip"`
	Labels    map[string]string `json:"labels,omitempty"`
	// NamedPorts maps a container port name to its protocol and number;
	// only the Kubernetes source knows them.
	NamedPorts map[string]NamedPort `json:"namedPorts,omitempty"`
	// HostIf is the host end of the pod's veth when the pod is on this
	// node; empty for remote pods. Only this node knows it.
	HostIf string `json:"-"`
	// Node names the node that runs the pod when the source says (the pod
	// directory, and the Kubernetes API for a scheduled pod); empty when it
	// does not.
	Node string `json:"node,omitempty"`
	// UID is the Pod object's UID where the source says it: the pod
	// directory when the runtime passed it, and the Kubernetes view for a
	// pod still awaiting its address (see WithAddresses).
	UID string `json:"uid,omitempty"`
}

// Local reports whether the pod runs on this node.
func (p Pod) Local() bool { return p.HostIf != "" }

// namedPort resolves a port a policy names with its protocol to the
// pod's number for it.
func (p Pod) namedPort(proto, name string) (PortRange, bool) {
	np, ok := p.NamedPorts[name]
	if !ok || np.Protocol != proto {
		return PortRange{}, false
	}
	return PortRange{Protocol: np.Protocol, Port: np.Port}, true
}

// NamedPort is a container port a policy may name.
type NamedPort struct {
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     uint16 `json:"port"`
}

// Snapshot is everything policy enforcement depends on at one moment.
type Snapshot struct {
	Policies []networkingv1.NetworkPolicy
	// Namespaces maps a namespace name to its labels. Namespaces that pods
	// use but no source declared exist with only NamespaceNameLabel.
	Namespaces map[string]map[string]string
	Pods       []Pod
	// NamedPortsKnown is false for sources that cannot resolve named
	// ports (files): such port entries then match nothing, with a warning.
	NamedPortsKnown bool
}

// namespaceLabels returns ns's labels, always including its name label.
func (s *Snapshot) namespaceLabels(ns string) map[string]string {
	out := map[string]string{}
	for k, v := range s.Namespaces[ns] {
		out[k] = v
	}
	out[NamespaceNameLabel] = ns
	return out
}

// sortPods orders pods by namespace, name and address so compiled output
// is deterministic.
func sortPods(pods []Pod) {
	slices.SortFunc(pods, func(a, b Pod) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.IP.Compare(b.IP)
	})
}
