package kubesource

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// trimObject is the informers' transform: it keeps of each object only
// what View reads before the object is cached. A real Pod carries its
// whole spec, status and managed fields, several KiB each, and a cluster
// has thousands: the helper's memory would grow with all of it. Already
// trimmed objects (and tombstones) pass unchanged, as client-go requires.
func trimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return trimPod(o), nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: trimMeta(o.ObjectMeta)}, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{ObjectMeta: trimMeta(o.ObjectMeta), Spec: o.Spec}, nil
	case *corev1.Node:
		// Only that it exists: its status alone is kilobytes.
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}, nil
	}
	return obj, nil
}

// trimMeta keeps an object's identity, version and labels.
func trimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels}
}

// trimPod keeps what policies read of a pod: labels, the mirror
// annotation of a static pod, host networking, named container ports,
// phase, address and node.
func trimPod(p *corev1.Pod) *corev1.Pod {
	meta := trimMeta(p.ObjectMeta)
	if uid, ok := p.Annotations[mirrorAnnotation]; ok {
		meta.Annotations = map[string]string{mirrorAnnotation: uid}
	}
	out := &corev1.Pod{ObjectMeta: meta,
		Spec:   corev1.PodSpec{HostNetwork: p.Spec.HostNetwork, NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP}}
	for _, c := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, port := range c.Ports {
			if port.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort, Protocol: port.Protocol})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Ports: ports})
		}
	}
	return out
}
