package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetworkingv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// KubernetesSource follows NetworkPolicy, Pod and Namespace objects of a
// cluster through client-go informers (list and watch only).
type KubernetesSource struct {
	factory    informers.SharedInformerFactory
	policies   listersnetworkingv1.NetworkPolicyLister
	pods       listerscorev1.PodLister
	namespaces listerscorev1.NamespaceLister
	synced     []cache.InformerSynced
	stop       chan struct{}
}

// NewKubernetesSource watches the cluster cs talks to; onChange is called
// (from informer goroutines, so it must not block) on every add, update
// or delete.
func NewKubernetesSource(cs kubernetes.Interface, onChange func()) (*KubernetesSource, error) {
	f := informers.NewSharedInformerFactory(cs, 0)
	s := &KubernetesSource{
		factory:    f,
		policies:   f.Networking().V1().NetworkPolicies().Lister(),
		pods:       f.Core().V1().Pods().Lister(),
		namespaces: f.Core().V1().Namespaces().Lister(),
		stop:       make(chan struct{}),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { onChange() },
		UpdateFunc: func(any, any) { onChange() },
		DeleteFunc: func(any) { onChange() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Networking().V1().NetworkPolicies().Informer(),
		f.Core().V1().Pods().Informer(),
		f.Core().V1().Namespaces().Informer(),
	} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("watch kubernetes objects: %w", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s, nil
}

// Start begins watching and waits until the caches hold the cluster's
// current objects, or ctx ends.
func (s *KubernetesSource) Start(ctx context.Context) error {
	s.factory.Start(s.stop)
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return errors.New("kubernetes policy source: caches did not sync (check the API server and RBAC list/watch on networkpolicies, pods, namespaces)")
	}
	return nil
}

// Stop ends the watches; call it once.
func (s *KubernetesSource) Stop() {
	close(s.stop)
	s.factory.Shutdown()
}

// Objects returns the valid policies and the namespaces' labels. Policies
// the API server accepted but Loom cannot enforce are reported in the
// returned error and left out; the others are in force.
func (s *KubernetesSource) Objects() (Objects, error) {
	objs := Objects{Namespaces: map[string]map[string]string{}}
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return objs, err
	}
	for _, ns := range nss {
		objs.Namespaces[ns.Name] = ns.Labels
	}
	pols, err := s.policies.List(labels.Everything())
	if err != nil {
		return objs, err
	}
	var errs []error
	for _, p := range pols {
		if err := Validate(p); err != nil {
			errs = append(errs, fmt.Errorf("NetworkPolicy %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		objs.Policies = append(objs.Policies, *p)
	}
	slices.SortFunc(objs.Policies, func(a, b networkingv1.NetworkPolicy) int {
		return strings.Compare(policyName(&a), policyName(&b))
	})
	return objs, errors.Join(errs...)
}

// Pods returns every running pod with an IPv4 address on the pod network
// (host-network pods share their node's address and are not policed), with
// its labels and named container ports.
func (s *KubernetesSource) Pods() ([]Pod, error) {
	list, err := s.pods.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := make([]Pod, 0, len(list))
	for _, p := range list {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !ip.Is4() {
			continue
		}
		out = append(out, Pod{Namespace: p.Namespace, Name: p.Name, IP: ip, Labels: p.Labels, NamedPorts: namedPorts(p)})
	}
	return out, nil
}

func namedPorts(p *corev1.Pod) map[string]NamedPort {
	var out map[string]NamedPort
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "" || port.ContainerPort < 1 || port.ContainerPort > 65535 {
				continue
			}
			if out == nil {
				out = map[string]NamedPort{}
			}
			proto := string(port.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			out[port.Name] = NamedPort{Protocol: proto, Port: uint16(port.ContainerPort)}
		}
	}
	return out
}

// syncTimeout bounds the first cache sync at agent start.
const syncTimeout = 60 * time.Second

// StartWithTimeout is Start bounded by the agent's start-up budget.
func (s *KubernetesSource) StartWithTimeout(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	return s.Start(ctx)
}

// WithLocal joins the cluster's view of pods with this node's
// attachments: a local attachment is matched to its Pod object by the
// namespace and name kubelet passed in CNI_ARGS (else by address) and
// gets the object's labels and named ports; attachments the API does not
// know (yet) keep what CNI_ARGS said.
func WithLocal(cluster, local []Pod) []Pod {
	type nsName struct{ ns, name string }
	byName := map[nsName]int{}
	byIP := map[netip.Addr]int{}
	out := slices.Clone(cluster)
	for i, p := range out {
		byName[nsName{p.Namespace, p.Name}] = i
		byIP[p.IP] = i
	}
	for _, l := range local {
		i, ok := byName[nsName{l.Namespace, l.Name}]
		if !ok || l.Name == "" {
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
