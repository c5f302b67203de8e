package policy

import (
	"bytes"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReadClusterViewsChecksAgain: what arrives on the stream is checked as
// if it came from a file: a policy that does not validate is left out and
// named, a pod without an IPv4 address is left out unless it names its
// node and has none yet, and the reader stops
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
			{Namespace: "x", Name: "scheduled", Node: "n2"},
			{Namespace: "x", Name: "v6-scheduled", IP: netip.MustParseAddr("fd00::2"), Node: "n2"},
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
	if len(v.Pods) != 2 || v.Pods[0].Name != "a" || v.Pods[0].HostIf != "" || v.Pods[1].Name != "scheduled" || v.Pods[1].Node != "n2" {
		t.Errorf("pods = %+v, want x/a without a host interface, and x/scheduled (on n2, its address to come)", v.Pods)
	}
	if v.Namespaces == nil {
		t.Error("namespaces nil, want an empty map")
	}
	_, err = v.Objects()
	if err == nil || !strings.Contains(err.Error(), "x/earlier") || !strings.Contains(err.Error(), "NetworkPolicy x/Not_A_Name: metadata.name") {
		t.Errorf("view errors = %v, want the helper's and the reader's", err)
	}
}

// TestWithAddresses: a pod the API has no address for takes the one its
// own node published for it under its namespace and name, never another
// node's, and is left out while there is none.
func TestWithAddresses(t *testing.T) {
	ip := netip.MustParseAddr
	cluster := []Pod{
		{Namespace: "x", Name: "known", IP: ip("10.244.1.2")},
		{Namespace: "x", Name: "web", Node: "n2", Labels: map[string]string{"app": "web"}},
		{Namespace: "x", Name: "db", Node: "n3"},
		{Namespace: "x", Name: "late", Node: "n2"},
	}
	published := []Pod{
		{Namespace: "x", Name: "web", Node: "n2", IP: ip("10.244.2.7")},
		{Namespace: "x", Name: "db", Node: "n2", IP: ip("10.244.2.8")}, // another node's claim
		{Namespace: "x", Name: "known", Node: "n1", IP: ip("10.244.1.9")},
	}
	got := WithAddresses(cluster, slices.Values(published))
	want := []Pod{cluster[0], cluster[1]}
	want[1].IP = ip("10.244.2.7")
	if len(got) != len(want) || got[0].IP != want[0].IP || got[1].Name != "web" || got[1].IP != want[1].IP || got[1].Labels["app"] != "web" {
		t.Fatalf("WithAddresses = %+v, want %+v", got, want)
	}
	if cluster[1].IP.IsValid() {
		t.Fatal("WithAddresses changed the view it was given")
	}
}

// TestClusterViewSharesWhatPodsHaveInCommon: replicas with equal labels
// and named ports share one map of each, and keep what they had; a pod
// with other labels or ports keeps its own.
func TestClusterViewSharesWhatPodsHaveInCommon(t *testing.T) {
	web := func() map[string]string { return map[string]string{"app": "web", "tier": "front"} }
	http := func(port uint16) map[string]NamedPort {
		return map[string]NamedPort{"http": {Protocol: "TCP", Port: port}}
	}
	pod := func(name string, last byte, labels map[string]string, ports map[string]NamedPort) Pod {
		return Pod{Namespace: "shop", Name: name, IP: netip.AddrFrom4([4]byte{10, 244, 0, last}), Labels: labels, NamedPorts: ports}
	}
	v := NewClusterView(nil, nil, []Pod{pod("web-1", 1, web(), http(8080)), pod("web-2", 2, web(), http(8080)),
		pod("web-3", 3, web(), http(9090)), pod("db", 4, map[string]string{"app": "db"}, nil)})
	byName := map[string]Pod{}
	for _, p := range v.Pods {
		byName[p.Name] = p
	}
	same := func(a, b any) bool { return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer() }
	w1, w2, w3, db := byName["web-1"], byName["web-2"], byName["web-3"], byName["db"]
	if !same(w1.Labels, w2.Labels) || !same(w1.Labels, w3.Labels) || same(w1.Labels, db.Labels) {
		t.Error("replicas' labels are not one map, or another pod's labels are theirs")
	}
	if !same(w1.NamedPorts, w2.NamedPorts) || same(w1.NamedPorts, w3.NamedPorts) {
		t.Error("equal named ports are not one map, or other ports are theirs")
	}
	if !maps.Equal(w3.Labels, web()) || !maps.Equal(w3.NamedPorts, http(9090)) || !maps.Equal(w2.NamedPorts, http(8080)) || db.Labels["app"] != "db" {
		t.Errorf("pods changed: %+v", v.Pods)
	}
}
