package policy

import (
	"bytes"
	"fmt"
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

// TestWithAddressesTellsPodsOfOneNameApart: a record naming another Pod
// UID is a predecessor's (a StatefulSet pod recreated, or force-deleted
// and still running) and lends nothing, whichever order the records come
// in; a record naming the Pod's UID wins over one that does not say; with
// no UIDs said the name is all there is.
func TestWithAddressesTellsPodsOfOneNameApart(t *testing.T) {
	ip := netip.MustParseAddr
	old := Pod{Namespace: "x", Name: "web-0", Node: "n2", IP: ip("10.244.2.7"), UID: "uid-old"}
	unsaid := Pod{Namespace: "x", Name: "web-0", Node: "n2", IP: ip("10.244.2.8")}
	current := Pod{Namespace: "x", Name: "web-0", Node: "n2", IP: ip("10.244.2.9"), UID: "uid-new"}
	for _, tc := range []struct {
		name      string
		viewUID   string
		published []Pod
		want      netip.Addr // invalid: left out
	}{
		{"predecessor only", "uid-new", []Pod{old}, netip.Addr{}},
		{"predecessor then pod", "uid-new", []Pod{old, current}, current.IP},
		{"pod then predecessor", "uid-new", []Pod{current, old}, current.IP},
		{"pod then a record not saying", "uid-new", []Pod{current, unsaid}, current.IP},
		{"a record not saying then pod", "uid-new", []Pod{unsaid, current}, current.IP},
		{"a record not saying", "uid-new", []Pod{unsaid}, unsaid.IP},
		{"view not saying", "", []Pod{old}, old.IP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := []Pod{{Namespace: "x", Name: "web-0", Node: "n2", UID: tc.viewUID}}
			got := WithAddresses(cluster, slices.Values(tc.published))
			switch {
			case !tc.want.IsValid() && len(got) != 0:
				t.Fatalf("WithAddresses = %+v, want the pod left out", got)
			case tc.want.IsValid() && (len(got) != 1 || got[0].IP != tc.want):
				t.Fatalf("WithAddresses = %+v, want web-0 at %v", got, tc.want)
			}
		})
	}
}

// TestWithLocal: an attachment takes its object's labels by name, else
// by address; of two attachments of one name (a pod and its predecessor,
// still attached) the object is the one with its address or UID, in
// either order, and the other keeps what CNI_ARGS said.
func TestWithLocal(t *testing.T) {
	ip := netip.MustParseAddr
	web := map[string]string{"app": "web"}
	cniLabels := map[string]string{"from": "cni"}
	attach := func(name, addr, uid string) Pod {
		return Pod{Namespace: "x", Name: name, IP: ip(addr), HostIf: "veth" + addr[len(addr)-1:], UID: uid, Labels: cniLabels}
	}
	find := func(t *testing.T, pods []Pod, addr string) Pod {
		t.Helper()
		for _, p := range pods {
			if p.IP == ip(addr) {
				return p
			}
		}
		t.Fatalf("no pod at %s in %+v", addr, pods)
		return Pod{}
	}
	t.Run("by name, by address, unknown", func(t *testing.T) {
		cluster := []Pod{
			{Namespace: "x", Name: "a", Labels: web, Node: "n1"},
			{Namespace: "x", Name: "b", IP: ip("10.244.1.3"), Labels: web},
		}
		got := WithLocal(cluster, []Pod{attach("a", "10.244.1.2", ""), attach("", "10.244.1.3", ""), attach("c", "10.244.1.4", "")})
		if len(got) != 3 {
			t.Fatalf("WithLocal = %+v, want 3 pods", got)
		}
		for addr, want := range map[string]string{"10.244.1.2": "web", "10.244.1.3": "web", "10.244.1.4": ""} {
			if p := find(t, got, addr); p.Labels["app"] != want || p.HostIf == "" {
				t.Errorf("pod at %s = %+v, want app=%q and its veth", addr, p, want)
			}
		}
		if cluster[0].IP.IsValid() {
			t.Fatal("WithLocal changed the view it was given")
		}
	})
	for _, tc := range []struct {
		name   string
		object Pod
	}{
		{"object with its address", Pod{Namespace: "x", Name: "web-0", IP: ip("10.244.1.9"), Labels: web}},
		{"object awaiting its address, with its UID", Pod{Namespace: "x", Name: "web-0", Node: "n1", UID: "uid-new", Labels: web}},
	} {
		for _, reversed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, reversed %v", tc.name, reversed), func(t *testing.T) {
				local := []Pod{attach("web-0", "10.244.1.9", "uid-new"), attach("web-0", "10.244.1.5", "uid-old")}
				if reversed {
					slices.Reverse(local)
				}
				got := WithLocal([]Pod{tc.object}, local)
				if len(got) != 2 {
					t.Fatalf("WithLocal = %+v, want the pod and its predecessor", got)
				}
				if p := find(t, got, "10.244.1.9"); p.Labels["app"] != "web" || p.HostIf != "veth9" {
					t.Errorf("the pod = %+v, want the object's labels and its own veth", p)
				}
				if p := find(t, got, "10.244.1.5"); p.Labels["from"] != "cni" || p.HostIf != "veth5" {
					t.Errorf("the predecessor = %+v, want what CNI_ARGS said and its own veth", p)
				}
			})
		}
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
