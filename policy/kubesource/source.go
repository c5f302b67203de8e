// Package kubesource follows a Kubernetes cluster's NetworkPolicy, Pod and
// Namespace objects (and the names of its Nodes, where RBAC allows)
// through client-go informers and streams them as policy.ClusterView
// values. It runs in the loom-kube-policy helper, never
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
	"slices"
	"time"

	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetworkingv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// Source watches the objects policies depend on (list and watch only).
type Source struct {
	cs         kubernetes.Interface
	factory    informers.SharedInformerFactory
	policies   listersnetworkingv1.NetworkPolicyLister
	pods       listerscorev1.PodLister
	namespaces listerscorev1.NamespaceLister
	// nodes is nil when the helper may not list nodes (RBAC of a release
	// before it needed them): views then leave them out.
	nodes   listerscorev1.NodeLister
	handler cache.ResourceEventHandler
	synced  []cache.InformerSynced
	stop    chan struct{}
	// changed holds one pending notification: any number of changes
	// before the next view make one view.
	changed chan struct{}
}

// New watches the cluster cs talks to; nothing happens until Start.
func New(cs kubernetes.Interface) (*Source, error) {
	f := informers.NewSharedInformerFactory(cs, 0)
	s := &Source{
		cs:         cs,
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
	s.handler = cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Networking().V1().NetworkPolicies().Informer(),
		f.Core().V1().Pods().Informer(),
		f.Core().V1().Namespaces().Informer(),
	} {
		if err := s.watch(inf); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Source) watch(inf cache.SharedIndexInformer) error {
	if err := inf.SetTransform(trimObject); err != nil {
		return fmt.Errorf("watch kubernetes objects: %w", err)
	}
	if _, err := inf.AddEventHandler(s.handler); err != nil {
		return fmt.Errorf("watch kubernetes objects: %w", err)
	}
	s.synced = append(s.synced, inf.HasSynced)
	return nil
}

// Start begins watching and waits until the caches hold the cluster's
// current objects, or ctx ends. Nodes are followed only when the helper
// may list them; nodesErr says why not (nil when they are). Policies do
// not need them: loomd uses them to free the subnet of a node the cluster
// deleted.
func (s *Source) Start(ctx context.Context) (nodesErr, err error) {
	if _, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		nodesErr = fmt.Errorf("list nodes: %w", err)
	} else {
		if err := s.watch(s.factory.Core().V1().Nodes().Informer()); err != nil {
			return nil, err
		}
		s.nodes = s.factory.Core().V1().Nodes().Lister()
	}
	s.factory.Start(s.stop)
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return nodesErr, errors.New("caches did not sync (check the API server and RBAC list/watch on networkpolicies, pods, namespaces)")
	}
	return nodesErr, nil
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
		pod := policy.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, NamedPorts: namedPorts(p)}
		if p.Status.PodIP == "" {
			// Scheduled, its address not reported yet: loomd may know it
			// from the pod's node (policy.WithAddresses), where the UID
			// tells it from a predecessor of the same name.
			pod.Node, pod.UID = p.Spec.NodeName, runtimeUID(p)
		} else if pod.IP, err = netip.ParseAddr(p.Status.PodIP); err != nil || !pod.IP.Is4() {
			continue
		}
		pods = append(pods, pod)
	}
	v := policy.NewClusterView(policies, namespaces, pods)
	if s.nodes != nil {
		nodes, err := s.nodes.List(labels.Everything())
		if err != nil {
			return policy.ClusterView{}, fmt.Errorf("list nodes: %w", err)
		}
		v.Nodes, v.NodesListed = make([]string, 0, len(nodes)), true
		for _, n := range nodes {
			v.Nodes = append(v.Nodes, n.Name)
		}
		slices.Sort(v.Nodes)
	}
	return v, nil
}

// mirrorAnnotation marks a static pod's mirror in the API; its value is
// the static pod's UID on its node (the hash of its manifest), which
// kubelet passes to the CNI plugin: the mirror's own UID is another.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// runtimeUID is the UID kubelet passes as K8S_POD_UID for the pod.
func runtimeUID(p *corev1.Pod) string {
	if uid := p.Annotations[mirrorAnnotation]; uid != "" {
		return uid
	}
	return string(p.UID)
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
// written again. Views are paced by what the last one cost to make, as
// loomd paces its compiles (policy.CompileWait): every view holds every
// pod, and at 100,000 pods making one took half a second here and as
// much to read and compile in loomd. It returns when ctx ends (nil) or a
// write fails.
func (s *Source) Stream(ctx context.Context, w io.Writer, interval time.Duration) error {
	out := &viewWriter{w: w}
	for {
		start := time.Now()
		v, err := s.View()
		if err != nil {
			return err
		}
		if _, err := out.write(v); err != nil {
			return err
		}
		made := time.Now()
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
		case <-time.After(max(interval, policy.CompileWait(made.Sub(start), time.Since(made)))):
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
