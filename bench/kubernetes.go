package bench

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FillCluster gives api a cluster to follow: pods spread over 20
// namespaces with a few distinct labels, and the policies of
// PolicyFile(policies).
func FillCluster(api *rig.FakeAPIServer, pods, policies int) error {
	const namespaces = 20
	for i := range namespaces {
		api.Set(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i),
			Labels: map[string]string{"tier": fmt.Sprint(i % 3)}}})
	}
	for i := range pods {
		ip := netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 1)})
		api.Set(realisticPod(fmt.Sprintf("bench-%d", i%namespaces), fmt.Sprintf("pod-%d", i), fmt.Sprintf("app%d", i%10), ip))
	}
	dir, err := os.MkdirTemp("", "loom-bench-policies-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(PolicyFile(policies)), 0o644); err != nil {
		return err
	}
	objs, err := policy.LoadDir(dir)
	if err != nil {
		return err
	}
	for i := range objs.Policies {
		api.Set(&objs.Policies[i])
	}
	return nil
}

// realisticPod is a Pod about the size real ones are (two containers
// with images, environment and resources, annotations, managed fields:
// a few KiB), so that what the helper caches is measured at scale.
func realisticPod(namespace, name, app string, ip netip.Addr) *corev1.Pod {
	env := make([]corev1.EnvVar, 8)
	for i := range env {
		env[i] = corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", i), Value: strings.Repeat("v", 40)}
	}
	container := func(n string, port int32) corev1.Container {
		return corev1.Container{Name: n, Image: "registry.example/" + app + "/" + n + ":1.2.3", Env: env,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
			Labels:      map[string]string{"app": app, "pod-template-hash": "5d8f9c7b6"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("{}", 400)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate,
				FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{` + strings.Repeat(`"f:x":{},`, 100) + `"f:y":{}}}`)}}},
		Spec: corev1.PodSpec{NodeName: "node", Containers: []corev1.Container{container("app", 8080), container("sidecar", 9090)}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), HostIP: "192.0.2.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}
