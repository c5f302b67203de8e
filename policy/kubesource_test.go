package policy_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/policy"
	"github.com/loomnet/loom/policy/kubesource"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestKubernetesSourceMatchesFiles drives the Kubernetes source with
// client-go's fake clientset holding the objects of each golden file,
// passes its view through the stream loomd reads, and checks that it
// compiles to exactly what the file source compiles to.
func TestKubernetesSourceMatchesFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := policy.DecodeFile(f, data)
			if err != nil {
				t.Fatal(err)
			}
			ns := policy.TruthNamespaces()
			for k, v := range objs.Namespaces {
				ns[k] = v
			}
			var kobjs []runtime.Object
			for name, lbls := range ns {
				kobjs = append(kobjs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}})
			}
			var local []policy.Pod
			for _, p := range policy.TruthPods() {
				kobjs = append(kobjs, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
					Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()},
				})
				if p.Local() {
					// What CNI_ARGS told the agent: no labels, so the match
					// by name must bring the API's.
					local = append(local, policy.Pod{Namespace: p.Namespace, Name: p.Name, IP: p.IP, HostIf: p.HostIf})
				}
			}
			for i := range objs.Policies {
				kobjs = append(kobjs, &objs.Policies[i])
			}
			// A host-network pod is not policed.
			kobjs = append(kobjs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "host", Labels: map[string]string{"pod": "a"}},
				Spec: corev1.PodSpec{HostNetwork: true}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.200.0.1"}})
			views := streamViews(t, fake.NewClientset(kobjs...))
			v := <-views
			kObjs, err := v.Objects()
			if err != nil {
				t.Fatal(err)
			}
			got := policy.Compile(policy.Snapshot{Policies: kObjs.Policies, Namespaces: kObjs.Namespaces,
				Pods: policy.WithLocal(v.Pods, local), NamedPortsKnown: true}).Render()
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

// streamViews starts a source on cs and streams its views through a pipe
// to the reader loomd uses; the views arrive on the returned channel.
func streamViews(t *testing.T, cs *fake.Clientset) <-chan policy.ClusterView {
	t.Helper()
	src, err := kubesource.New(cs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if _, err := src.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	views := make(chan policy.ClusterView, 16)
	readDone := make(chan error, 1)
	go func() {
		readDone <- policy.ReadClusterViews(pr, func(v policy.ClusterView) {
			select {
			case views <- v:
			case <-ctx.Done():
			}
		})
	}()
	streamDone := make(chan error, 1)
	go func() { streamDone <- src.Stream(ctx, pw, 10*time.Millisecond) }()
	t.Cleanup(func() {
		cancel()
		if err := <-streamDone; err != nil {
			t.Errorf("stream: %v", err)
		}
		pw.Close()
		if err := <-readDone; err != nil {
			t.Errorf("read views: %v", err)
		}
		src.Stop()
	})
	return views
}

// TestKubernetesSourceStreamsChanges: a change the policies read makes a
// new view, and a policy Loom cannot
// enforce is named in the view's errors while the others stay in force.
func TestKubernetesSourceStreamsChanges(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.10"}}
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, pod)
	views := streamViews(t, cs)
	next := func(what string) policy.ClusterView {
		t.Helper()
		select {
		case v := <-views:
			return v
		case <-time.After(10 * time.Second):
			t.Fatalf("no view after %s", what)
			return policy.ClusterView{}
		}
	}
	v := next("start")
	if len(v.Pods) != 1 || v.Pods[0].NamedPorts["http"] != (policy.NamedPort{Protocol: "TCP", Port: 8080}) {
		t.Fatalf("first view's pods: %+v", v.Pods)
	}
	ctx := context.Background()

	pod.Labels["role"] = "web"
	if _, err := cs.CoreV1().Pods("x").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	v = next("label change")
	if v.Pods[0].Labels["role"] != "web" {
		t.Fatalf("view after the label change: %+v", v.Pods)
	}

	good := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "good"}}
	bad := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "bad"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Sideways"}}}
	for _, p := range []*networkingv1.NetworkPolicy{good, bad} {
		if _, err := cs.NetworkingV1().NetworkPolicies("x").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(v.Policies)+len(v.Errors) < 2 && time.Now().Before(deadline) {
		v = next("policies created")
	}
	objs, err := v.Objects()
	if len(objs.Policies) != 1 || objs.Policies[0].Name != "good" {
		t.Errorf("policies in force: %+v", objs.Policies)
	}
	if err == nil || !strings.Contains(err.Error(), "NetworkPolicy x/bad: spec.policyTypes[0]") {
		t.Errorf("errors = %v, want one naming x/bad and its field", err)
	}
}

// TestKubernetesSourceFollowsNodes: views name the cluster's Nodes, and a
// deleted Node leaves them; a helper that may not list nodes still
// streams policies, with no node list rather than an empty one.
func TestKubernetesSourceFollowsNodes(t *testing.T) {
	node := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	cs := fake.NewClientset(node("b"), node("a"))
	views := streamViews(t, cs)
	v := <-views
	if !v.NodesListed || strings.Join(v.Nodes, ",") != "a,b" {
		t.Fatalf("first view's nodes: listed %v, %v; want a,b", v.NodesListed, v.Nodes)
	}
	if err := cs.CoreV1().Nodes().Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case v = <-views:
	case <-time.After(10 * time.Second):
		t.Fatal("no view after a node was deleted")
	}
	if !v.NodesListed || strings.Join(v.Nodes, ",") != "a" {
		t.Fatalf("view after deleting b: listed %v, %v; want a", v.NodesListed, v.Nodes)
	}

	forbidden := fake.NewClientset(node("a"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	forbidden.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("nodes"), "", errors.New("no RBAC"))
	})
	src, err := kubesource.New(forbidden)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodesErr, err := src.Start(ctx)
	if err != nil || !apierrors.IsForbidden(nodesErr) {
		t.Fatalf("Start without RBAC on nodes: nodes %v, err %v; want nodes forbidden and no error", nodesErr, err)
	}
	v, err = src.View()
	if _, ok := v.Namespaces["x"]; err != nil || v.NodesListed || v.Nodes != nil || !ok {
		t.Fatalf("view without nodes: %+v, %v", v, err)
	}
}
