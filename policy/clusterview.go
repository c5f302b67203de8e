package policy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterView is what the Kubernetes policy source knows at one moment:
// the cluster's NetworkPolicies, namespaces and pods. The source runs in
// its own process (loom-kube-policy), which keeps client-go and the pages
// its initialisers touch out of loomd, and hands loomd a stream of views,
// one JSON value each.
type ClusterView struct {
	Policies []networkingv1.NetworkPolicy `json:"policies"`
	// Namespaces maps a namespace name to its labels.
	Namespaces map[string]map[string]string `json:"namespaces"`
	// Pods are the running pods with an IPv4 address on the pod network,
	// and the pods scheduled to a node whose address the API does not
	// say yet (see WithAddresses).
	Pods []Pod `json:"pods"`
	// Errors name the policies the API server accepted but Loom cannot
	// enforce, and why; they are not in Policies.
	Errors []string `json:"errors,omitempty"`
	// Nodes are the names of the cluster's Node objects, sorted, when
	// NodesListed. A helper that may not list nodes sends neither, which
	// is not the same as a cluster without nodes.
	Nodes       []string `json:"nodes,omitempty"`
	NodesListed bool     `json:"nodesListed,omitempty"`
}

// NewClusterView validates and orders what a cluster holds: a policy Loom
// cannot enforce is left out and named in Errors, a pod without an IPv4
// address is left out unless it names its node (its address is still to
// come). Both ends of the stream apply it, so loomd never trusts a view
// more than the files it reads itself.
func NewClusterView(policies []networkingv1.NetworkPolicy, namespaces map[string]map[string]string, pods []Pod) ClusterView {
	v := ClusterView{Namespaces: namespaces, Policies: []networkingv1.NetworkPolicy{}, Pods: make([]Pod, 0, len(pods))}
	if v.Namespaces == nil {
		v.Namespaces = map[string]map[string]string{}
	}
	for i := range policies {
		p := &policies[i]
		if err := Validate(p); err != nil {
			v.Errors = append(v.Errors, fmt.Sprintf("NetworkPolicy %s/%s: %v", p.Namespace, p.Name, err))
			continue
		}
		// Policies are read for their name and spec only; the rest of the
		// metadata (annotations, managed fields) need not travel.
		v.Policies = append(v.Policies, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}, Spec: p.Spec})
	}
	slices.SortFunc(v.Policies, func(a, b networkingv1.NetworkPolicy) int {
		return strings.Compare(policyName(&a), policyName(&b))
	})
	shared := &viewSharing{labels: newLabelSets(), ports: map[string]map[string]NamedPort{}, names: map[string]string{}}
	for _, p := range pods {
		if p.IP.Is4() || (!p.IP.IsValid() && p.Node != "") {
			p.HostIf = ""
			v.Pods = append(v.Pods, shared.pod(p))
		}
	}
	sortPods(v.Pods)
	return v
}

// viewSharing lets the pods of a view share what they have in common:
// the replicas of a workload have the same labels and named ports, and
// every pod of a namespace its name. A view of 100,000 pods is read
// anew at each change of the cluster, and kept until the next.
type viewSharing struct {
	labels *labelSets
	ports  map[string]map[string]NamedPort
	names  map[string]string
	// key is room to encode a pod's named ports in, reused.
	key []byte
}

func (s *viewSharing) pod(p Pod) Pod {
	p.Labels = s.labels.share(p.Labels)
	p.Namespace = s.name(p.Namespace)
	p.Node = s.name(p.Node)
	if len(p.NamedPorts) > 0 {
		k := appendMapKey(s.key[:0], p.NamedPorts, appendNamedPort)
		s.key = k
		if have, ok := s.ports[string(k)]; ok {
			p.NamedPorts = have
		} else {
			s.ports[string(k)] = p.NamedPorts
		}
	}
	return p
}

func appendNamedPort(out []byte, np NamedPort) []byte {
	out = appendLengthPrefixed(out, np.Protocol)
	return binary.BigEndian.AppendUint16(out, np.Port)
}

// name is the view's one copy of a namespace's or node's name.
func (s *viewSharing) name(n string) string {
	if have, ok := s.names[n]; ok {
		return have
	}
	s.names[n] = n
	return n
}

// Objects returns the view's policies and namespaces, and its errors
// joined (nil when every policy is in force).
func (v ClusterView) Objects() (Objects, error) {
	var errs []error
	for _, e := range v.Errors {
		errs = append(errs, errors.New(e))
	}
	return Objects{Policies: v.Policies, Namespaces: v.Namespaces}, errors.Join(errs...)
}

// WriteClusterView writes v as one line of JSON.
func WriteClusterView(w io.Writer, v ClusterView) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode cluster view: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadClusterViews calls fn with each view read from r, checked again
// with NewClusterView, until r ends (nil) or holds something that is not
// a view (an error saying where). A stream cannot resynchronise after a
// malformed value, so reading stops there.
func ReadClusterViews(r io.Reader, fn func(ClusterView)) error {
	dec := json.NewDecoder(r)
	for n := 1; ; n++ {
		var v ClusterView
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("cluster view %d: %w", n, err)
		}
		checked := NewClusterView(v.Policies, v.Namespaces, v.Pods)
		checked.Errors = append(v.Errors, checked.Errors...)
		checked.Nodes, checked.NodesListed = v.Nodes, v.NodesListed
		fn(checked)
	}
}

// WithAddresses gives the pods of the cluster's view that the API has no
// address for yet the address their node published for them (the pod
// directory's record of the same namespace and name, from the Pod's
// node), and leaves out those still without one. Kubelet writes a pod's
// address into the API only after its sandbox is up, about a second after
// the ADD, and the pod may be talking by then: policies elsewhere that
// admit it by label would drop its first packets until then. A record
// naming another Pod UID is a predecessor of the same name (a StatefulSet
// pod recreated, or force-deleted while still running) and lends nothing;
// one naming the Pod's UID wins over one that does not say.
func WithAddresses(cluster []Pod, published iter.Seq[Pod]) []Pod {
	type key struct{ node, ns, name string }
	waiting := map[key]int{}
	for i, p := range cluster {
		if !p.IP.IsValid() {
			waiting[key{p.Node, p.Namespace, p.Name}] = i
		}
	}
	if len(waiting) == 0 {
		return cluster
	}
	out := slices.Clone(cluster)
	byUID := map[int]bool{}
	for p := range published {
		i, ok := waiting[key{p.Node, p.Namespace, p.Name}]
		if !ok || p.Name == "" || !p.IP.Is4() || !SamePodUID(p.UID, cluster[i].UID) || (byUID[i] && p.UID == "") {
			continue
		}
		out[i].IP = p.IP
		byUID[i] = p.UID != ""
	}
	return slices.DeleteFunc(out, func(p Pod) bool { return !p.IP.IsValid() })
}

// WithLocal joins the cluster's view of pods with this node's
// attachments: a local attachment is matched to its Pod object by the
// namespace and name kubelet passed in CNI_ARGS (else by address) and
// gets the object's labels and named ports; attachments the API does not
// know (yet) keep what CNI_ARGS said. Two attachments of one name are a
// pod and its predecessor, still attached (a pod force-deleted, its
// sandbox not yet torn down): the object is the one with its address or
// its UID.
func WithLocal(cluster, local []Pod) []Pod {
	type nsName struct{ ns, name string }
	byName := map[nsName]int{}
	byIP := map[netip.Addr]int{}
	out := slices.Clone(cluster)
	for i, p := range out {
		byName[nsName{p.Namespace, p.Name}] = i
		byIP[p.IP] = i
	}
	named := func(l Pod) (int, bool) {
		i, ok := byName[nsName{l.Namespace, l.Name}]
		return i, ok && l.Name != "" && SamePodUID(cluster[i].UID, l.UID)
	}
	// known reports whether l is object i's pod for sure: by its address
	// or its UID. An object one attachment is known to be takes no other.
	known := func(i int, l Pod) bool { return cluster[i].IP == l.IP || (l.UID != "" && cluster[i].UID == l.UID) }
	claimed := map[int]bool{}
	for _, l := range local {
		if i, ok := named(l); ok && known(i, l) {
			claimed[i] = true
		}
	}
	for _, l := range local {
		i, ok := named(l)
		if ok && claimed[i] {
			ok = known(i, l)
		}
		if !ok {
			i, ok = byIP[l.IP]
		}
		if ok {
			out[i].HostIf, out[i].IP = l.HostIf, l.IP
			continue
		}
		out = append(out, l)
	}
	return out
}
