package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubernetesPolicySource runs loomd with --policy-source kubernetes
// against an API server (rig.FakeAPIServer, which answers list and watch):
// loomd starts its real loom-kube-policy helper, which follows the
// objects; a NetworkPolicy created in the API cuts a pod off, and a label
// changed on the client's Pod object lets it in again.
func TestKubernetesPolicySource(t *testing.T) {
	r := newRig(t)
	apiServer := rig.NewFakeAPIServer()
	apiServer.Set(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}}})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := rig.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	var nodes []*rig.Node
	for i := 1; i <= 2; i++ {
		n, err := r.AddNode(fmt.Sprintf("node%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// The API server as each node sees it: on its own loopback.
		stop, err := rig.ServeAPI(n.NS, apiServer)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		if err := n.StartWith(func(a []string) []string {
			return append(a, "--policy-source", "kubernetes", "--kubeconfig", kubeconfig)
		}, nodes...); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := n.WaitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	web := addPod(t, nodes[0], "web")
	client := addPod(t, nodes[1], "client")
	podObject := func(name string, p *rig.Pod, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()}}
	}
	apiServer.Set(podObject("web", web, map[string]string{"app": "web"}))
	apiServer.Set(podObject("client", client, map[string]string{"app": "client"}))

	addr := net.JoinHostPort(web.IP.String(), "8080")
	serveIn(t, web.NS, addr)
	reach := func() error { return dialFrom(client.NS, addr) }
	cutOff := func() error {
		if reach() == nil {
			return fmt.Errorf("client still reaches web")
		}
		return nil
	}
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client cannot reach web before any policy: %v", err)
	}

	apiServer.Set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-frontend"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}},
			}}},
		}})
	if err := rig.Eventually(30*time.Second, cutOff); err != nil {
		t.Fatalf("the policy from the API was not enforced: %v", err)
	}

	apiServer.Set(podObject("client", client, map[string]string{"app": "frontend"}))
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client relabelled app=frontend in the API still cut off: %v", err)
	}

	// The helper dies: loomd starts it again, and the next change arrives.
	helper, err := rig.ChildProcess(nodes[0].Pid(), "loom-kube-policy")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	apiServer.Set(podObject("client", client, map[string]string{"app": "client"}))
	if err := rig.Eventually(30*time.Second, cutOff); err != nil {
		t.Fatalf("after the helper was killed, a label change in the API was not enforced: %v", err)
	}
	if again, err := rig.ChildProcess(nodes[0].Pid(), "loom-kube-policy"); err != nil || again == helper {
		t.Fatalf("helper after the kill: %d, %v (was %d)", again, err, helper)
	}
}
