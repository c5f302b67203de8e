package policy

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReadClusterViewsChecksAgain: what arrives on the stream is checked as
// if it came from a file: a policy that does not validate is left out and
// named, a pod without an IPv4 address is left out, and the reader stops
// with an error naming the view that is not one.
func TestReadClusterViewsChecksAgain(t *testing.T) {
	var stream bytes.Buffer
	// Written without NewClusterView, as a helper of another version might.
	raw := ClusterView{
		Policies: []networkingv1.NetworkPolicy{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "ok"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "Not_A_Name"}},
		},
		Pods: []Pod{
			{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.0.10"), HostIf: "lmxa"},
			{Namespace: "x", Name: "v6", IP: netip.MustParseAddr("fd00::1")},
			{Namespace: "x", Name: "none"},
		},
		Errors: []string{"NetworkPolicy x/earlier: from the helper"},
	}
	if err := WriteClusterView(&stream, raw); err != nil {
		t.Fatal(err)
	}
	stream.WriteString(`{"policies": 42}` + "\n")
	var views []ClusterView
	err := ReadClusterViews(&stream, func(v ClusterView) { views = append(views, v) })
	if err == nil || !strings.Contains(err.Error(), "cluster view 2") {
		t.Errorf("error = %v, want one naming cluster view 2", err)
	}
	if len(views) != 1 {
		t.Fatalf("%d views read, want 1", len(views))
	}
	v := views[0]
	if len(v.Policies) != 1 || v.Policies[0].Name != "ok" {
		t.Errorf("policies = %+v, want x/ok only", v.Policies)
	}
	if len(v.Pods) != 1 || v.Pods[0].Name != "a" || v.Pods[0].HostIf != "" {
		t.Errorf("pods = %+v, want x/a only, without a host interface", v.Pods)
	}
	if v.Namespaces == nil {
		t.Error("namespaces nil, want an empty map")
	}
	_, err = v.Objects()
	if err == nil || !strings.Contains(err.Error(), "x/earlier") || !strings.Contains(err.Error(), "NetworkPolicy x/Not_A_Name: metadata.name") {
		t.Errorf("view errors = %v, want the helper's and the reader's", err)
	}
}
