package kubesource

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// TestViewWriterSkipsRepeats: a view equal to the last one written (what
// a pod status update that changes nothing policies read produces) is not
// written again; a different one is.
func TestViewWriterSkipsRepeats(t *testing.T) {
	var out bytes.Buffer
	vw := &viewWriter{w: &out}
	pod := policy.Pod{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.0.10"), Labels: map[string]string{"pod": "a"}}
	v := policy.NewClusterView(nil, nil, []policy.Pod{pod})
	for i, want := range []bool{true, false} {
		wrote, err := vw.write(v)
		if err != nil || wrote != want {
			t.Fatalf("write %d = %v, %v; want %v", i, wrote, err, want)
		}
	}
	pod.Labels = map[string]string{"pod": "b"}
	if wrote, err := vw.write(policy.NewClusterView(nil, nil, []policy.Pod{pod})); err != nil || !wrote {
		t.Fatalf("changed view written = %v, %v", wrote, err)
	}
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("%d views written, want 2:\n%s", n, out.String())
	}
}

// TestTrimKeepsWhatViewsRead: a pod, namespace and policy trimmed for the
// cache make the same view as the whole objects, and trimming is
// idempotent.
func TestTrimKeepsWhatViewsRead(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a", Labels: map[string]string{"app": "web"},
			Annotations:   map[string]string{"big": strings.Repeat("x", 4096)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{
			{Name: "web", Image: "web:1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}}},
			{Name: "sidecar", Image: "proxy:1"},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.10", HostIP: "192.0.2.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"k": "v"}}}
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p", Annotations: map[string]string{"k": "v"}},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	view := func(objs ...runtime.Object) policy.ClusterView {
		t.Helper()
		src, err := New(fake.NewClientset())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			var err error
			switch o := o.(type) {
			case *corev1.Pod:
				err = src.factory.Core().V1().Pods().Informer().GetStore().Add(o)
			case *corev1.Namespace:
				err = src.factory.Core().V1().Namespaces().Informer().GetStore().Add(o)
			case *networkingv1.NetworkPolicy:
				err = src.factory.Networking().V1().NetworkPolicies().Informer().GetStore().Add(o)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		v, err := src.View()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	trim := func(o runtime.Object) runtime.Object {
		t.Helper()
		once, _ := trimObject(o)
		twice, _ := trimObject(once)
		if !reflect.DeepEqual(once, twice) {
			t.Fatalf("trimming %T twice changes it", o)
		}
		return twice.(runtime.Object)
	}
	// Scheduled, its address not reported yet: in the view with its node.
	scheduled := pod.DeepCopy()
	scheduled.Name, scheduled.UID, scheduled.Status.PodIP, scheduled.Spec.NodeName = "b", "uid-b", "", "n2"
	unscheduled := scheduled.DeepCopy()
	unscheduled.Name, unscheduled.Spec.NodeName, unscheduled.Status.Phase = "c", "", corev1.PodPending
	// A static pod's mirror: kubelet passes the static pod's UID, which
	// the mirror annotation holds.
	mirror := scheduled.DeepCopy()
	mirror.Name, mirror.UID = "d", "uid-of-the-mirror"
	mirror.Annotations[mirrorAnnotation] = "0123456789abcdef0123456789abcdef"
	whole := view(pod, scheduled, unscheduled, mirror, ns, pol)
	trimmed := view(trim(pod), trim(scheduled), trim(unscheduled), trim(mirror), trim(ns), trim(pol))
	if !reflect.DeepEqual(whole, trimmed) {
		t.Errorf("views differ:\nwhole   %+v\ntrimmed %+v", whole, trimmed)
	}
	if len(whole.Pods) != 3 || whole.Pods[0].NamedPorts["http"].Port != 8080 || len(whole.Policies) != 1 {
		t.Fatalf("view of the whole objects: %+v", whole)
	}
	// The UID tells an awaiting pod from a predecessor of its name; a pod
	// with an address needs none, and a view of many pods is smaller
	// without.
	if b := whole.Pods[1]; b.Name != "b" || b.Node != "n2" || b.IP.IsValid() || b.UID != "uid-b" {
		t.Fatalf("the scheduled pod in the view: %+v, want b (uid-b) on n2 without an address", b)
	}
	if a := whole.Pods[0]; a.UID != "" {
		t.Fatalf("the running pod in the view: %+v, want no UID", a)
	}
	if d := whole.Pods[2]; d.Name != "d" || d.UID != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("the mirror pod in the view: %+v, want the static pod's UID", d)
	}
	if p := trim(pod).(*corev1.Pod); p.Annotations != nil || p.ManagedFields != nil || p.Spec.Containers[0].Image != "" {
		t.Errorf("trimmed pod still carries %+v", p)
	}
}
