// Package kubesource follows a Kubernetes cluster's NetworkPolicy, Pod and
// Namespace objects through client-go informers and streams them as
// policy.ClusterView values. It runs in the loom-kube-policy helper, never
// in loomd: client-go's package initialisers alone would add about 12 MiB
// to every agent's resident memory, policy source or not.
package kubesource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetworkingv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// Source watches the objects policies depend on (list and watch only).
type Source struct {
	factory    informers.SharedInformerFactory
	policies   listersnetworkingv1.NetworkPolicyLister
	pods       listerscorev1.PodLister
	namespaces listerscorev1.NamespaceLister
	synced     []cache.InformerSynced
	stop       chan struct{}
	// changed holds one pending notification: any number of changes
	// before the next view make one view.
	changed chan struct{}
}

// New watches the cluster cs talks to; nothing happens until Start.
func New(cs kubernetes.Interface) (*Source, error) {
	f := informers.NewSharedInformerFactory(cs, 0)
	s := &Source{
		factory:    f,
		policies:   f.Networking().V1().NetworkPolicies().Lister(),
		pods:       f.Core().V1().Pods().Lister(),
		namespaces: f.Core().V1().Namespaces().Lister(),
		stop:       make(chan struct{}),
		changed:    make(chan struct{}, 1),
	}
	notify := func() {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Networking().V1().NetworkPolicies().Informer(),
		f.Core().V1().Pods().Informer(),
		f.Core().V1().Namespaces().Informer(),
	} {
		if err := inf.SetTransform(trimObject); err != nil {
			return nil, fmt.Errorf("watch kubernetes objects: %w", err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("watch kubernetes objects: %w", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s, nil
}

// Start begins watching and waits until the caches hold the cluster's
// current objects, or ctx ends.
func (s *Source) Start(ctx context.Context) error {
	s.factory.Start(s.stop)
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return errors.New("caches did not sync (check the API server and RBAC list/watch on networkpolicies, pods, namespaces)")
	}
	return nil
}

// Stop ends the watches; call it once.
func (s *Source) Stop() {
	close(s.stop)
	s.factory.Shutdown()
}

// View returns what the caches hold now.
func (s *Source) View() (policy.ClusterView, error) {
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return policy.ClusterView{}, fmt.Errorf("list namespaces: %w", err)
	}
	namespaces := make(map[string]map[string]string, len(nss))
	for _, ns := range nss {
		namespaces[ns.Name] = ns.Labels
	}
	pols, err := s.policies.List(labels.Everything())
	if err != nil {
		return policy.ClusterView{}, fmt.Errorf("list network policies: %w", err)
	}
	policies := make([]networkingv1.NetworkPolicy, 0, len(pols))
	for _, p := range pols {
		policies = append(policies, *p)
	}
	list, err := s.pods.List(labels.Everything())
	if err != nil {
		return policy.ClusterView{}, fmt.Errorf("list pods: %w", err)
	}
	pods := make([]policy.Pod, 0, len(list))
	for _, p := range list {
		// Host-network pods share their node's address and are not
		// policed; finished pods hold no address any more.
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !ip.Is4() {
			continue
		}
		pods = append(pods, policy.Pod{Namespace: p.Namespace, Name: p.Name, IP: ip, Labels: p.Labels, NamedPorts: namedPorts(p)})
	}
	return policy.NewClusterView(policies, namespaces, pods), nil
}

func namedPorts(p *corev1.Pod) map[string]policy.NamedPort {
	var out map[string]policy.NamedPort
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "" || port.ContainerPort < 1 || port.ContainerPort > 65535 {
				continue
			}
			if out == nil {
				out = map[string]policy.NamedPort{}
			}
			proto := string(port.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			out[port.Name] = policy.NamedPort{Protocol: proto, Port: uint16(port.ContainerPort)}
		}
	}
	return out
}

// Stream writes the current view to w, then a new one after changes: the
// changes of one interval make one view, and a view equal to the last one
// written (a pod's status changed, say, but nothing a policy reads) is not
// written again. It returns when ctx ends (nil) or a write fails.
func (s *Source) Stream(ctx context.Context, w io.Writer, interval time.Duration) error {
	out := &viewWriter{w: w}
	for {
		v, err := s.View()
		if err != nil {
			return err
		}
		if _, err := out.write(v); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
		}
		// Let the rest of a burst (a namespace of pods starting, a
		// deployment's rollout) arrive before the next view.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// viewWriter writes a view only when it differs from the last one
// written: loomd recompiles on every view it reads.
type viewWriter struct {
	w    io.Writer
	last []byte
}

// write reports whether v was written.
func (vw *viewWriter) write(v policy.ClusterView) (bool, error) {
	var cur bytes.Buffer
	if err := policy.WriteClusterView(&cur, v); err != nil {
		return false, err
	}
	if bytes.Equal(cur.Bytes(), vw.last) {
		return false, nil
	}
	if _, err := vw.w.Write(cur.Bytes()); err != nil {
		return false, fmt.Errorf("write cluster view: %w", err)
	}
	vw.last = cur.Bytes()
	return true, nil
}
