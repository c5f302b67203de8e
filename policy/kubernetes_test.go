package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// TestKubernetesSourceMatchesFiles drives the Kubernetes source with
// client-go's fake clientset holding the objects of each golden file, and
// checks that it compiles to exactly what the file source compiles to.
func TestKubernetesSourceMatchesFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*.yaml")
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs := Objects{Namespaces: map[string]map[string]string{}}
			if err := decodeFile(f, data, &objs, map[string]string{}); err != nil {
				t.Fatal(err)
			}
			ns := truthNamespaces()
			for k, v := range objs.Namespaces {
				ns[k] = v
			}
			var kobjs []runtime.Object
			for name, lbls := range ns {
				kobjs = append(kobjs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}})
			}
			var local []Pod
			for _, p := range truthPods() {
				kobjs = append(kobjs, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
					Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()},
				})
				if p.Local() {
					// What CNI_ARGS told the agent: no labels, so the match
					// by name must bring the API's.
					local = append(local, Pod{Namespace: p.Namespace, Name: p.Name, IP: p.IP, HostIf: p.HostIf})
				}
			}
			for i := range objs.Policies {
				kobjs = append(kobjs, &objs.Policies[i])
			}
			// A host-network pod is not policed.
			kobjs = append(kobjs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "host", Labels: map[string]string{"pod": "a"}},
				Spec: corev1.PodSpec{HostNetwork: true}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.200.0.1"}})
			cs := fake.NewClientset(kobjs...)
			changed := make(chan struct{}, 1)
			src, err := NewKubernetesSource(cs, func() {
				select {
				case changed <- struct{}{}:
				default:
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := src.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer src.Stop()
			kObjs, err := src.Objects()
			if err != nil {
				t.Fatal(err)
			}
			cluster, err := src.Pods()
			if err != nil {
				t.Fatal(err)
			}
			got := Compile(Snapshot{Policies: kObjs.Policies, Namespaces: kObjs.Namespaces, Pods: WithLocal(cluster, local), NamedPortsKnown: true}).Render()
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			// The file source cannot resolve named ports and warns; the
			// Kubernetes source can, and no pod here names one.
			wantS := strings.ReplaceAll(string(want), "warning: policy x/ports: named port \"http\" cannot be resolved without the kubernetes policy source; it matches nothing\n", "")
			if got != wantS {
				t.Errorf("kubernetes source compiles differently:\n--- got\n%s--- want\n%s", got, wantS)
			}
		})
	}
}

// TestKubernetesNamedPorts resolves a named port on the destination pod,
// for ingress on the selected pod and for egress on each peer.
func TestKubernetesNamedPorts(t *testing.T) {
	pods := truthPods()
	for i := range pods {
		if pods[i].Name == "b" {
			pods[i].NamedPorts = map[string]NamedPort{"http": {Protocol: "TCP", Port: 8080}}
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: http}]
`), 0o644)
	objs, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := Compile(Snapshot{Policies: objs.Policies, Namespaces: truthNamespaces(), Pods: pods, NamedPortsKnown: true})
	got := c.Render()
	for _, want := range []string{
		"pod x/a 10.244.0.10 via lmxa, selected by x/named\n  ingress: isolated\n    drop\n  egress: isolated\n    allow to {10.244.1.11/32} on tcp/8080 (x/named)\n    drop\n",
		"pod x/b 10.244.0.11 via lmxb, selected by x/named\n  ingress: isolated\n    allow from any on tcp/8080 (x/named)\n    drop\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("compiled:\n%s\nwant it to contain:\n%s", got, want)
		}
	}
}
