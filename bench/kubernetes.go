package bench

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/policy"
	corev1 "k8s.io/api/core/v1"
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
		api.Set(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("bench-%d", i%namespaces), Name: fmt.Sprintf("pod-%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", i%10)}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String()},
		})
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
