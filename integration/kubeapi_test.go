package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubernetesPolicySource runs loomd with --policy-source kubernetes
// against an API server (a small fake that answers list and watch, below):
// loomd starts its real loom-kube-policy helper, which follows the
// objects; a NetworkPolicy created in the API cuts a pod off, and a label
// changed on the client's Pod object lets it in again.
func TestKubernetesPolicySource(t *testing.T) {
	r := newRig(t)
	apiServer := newFakeAPIServer()
	apiServer.set(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}}})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:6443"}}]
users: [{name: loom, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: loom}}]
current-context: fake
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*rig.Node
	for i := 1; i <= 2; i++ {
		n, err := r.AddNode(fmt.Sprintf("node%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// The API server as each node sees it: on its own loopback.
		l := listenIn(t, n.NS, "127.0.0.1:6443")
		srv := &http.Server{Handler: apiServer}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
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
	apiServer.set(podObject("web", web, map[string]string{"app": "web"}))
	apiServer.set(podObject("client", client, map[string]string{"app": "client"}))

	addr := net.JoinHostPort(web.IP.String(), "8080")
	serveIn(t, web.NS, addr)
	reach := func() error { return dialFrom(client.NS, addr) }
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client cannot reach web before any policy: %v", err)
	}

	apiServer.set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-frontend"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}},
			}}},
		}})
	if err := rig.Eventually(30*time.Second, func() error {
		if reach() == nil {
			return fmt.Errorf("client still reaches web")
		}
		return nil
	}); err != nil {
		t.Fatalf("the policy from the API was not enforced: %v", err)
	}

	apiServer.set(podObject("client", client, map[string]string{"app": "frontend"}))
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client relabelled app=frontend in the API still cut off: %v", err)
	}

	// The helper dies: loomd starts it again, and the next change arrives.
	helper := childNamed(t, nodes[0].Pid(), "loom-kube-policy")
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	apiServer.set(podObject("client", client, map[string]string{"app": "client"}))
	if err := rig.Eventually(30*time.Second, func() error {
		if reach() == nil {
			return fmt.Errorf("client still reaches web")
		}
		return nil
	}); err != nil {
		t.Fatalf("after the helper was killed, a label change in the API was not enforced: %v", err)
	}
	if again := childNamed(t, nodes[0].Pid(), "loom-kube-policy"); again == helper {
		t.Fatalf("helper %d still the same process", helper)
	}
}

// childNamed returns the pid of parent's child process called name.
func childNamed(t *testing.T, parent int, name string) int {
	t.Helper()
	comm := name[:min(len(name), 15)] // the kernel keeps 15 bytes of it
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(string(b[end+1:]))
		if string(b[open+1:end]) != comm || len(fields) < 2 || fields[1] != strconv.Itoa(parent) {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:open])))
		return pid
	}
	t.Fatalf("no %s process under pid %d", name, parent)
	return 0
}

// serveIn accepts and closes connections on addr in a namespace until the
// test ends.
func serveIn(t *testing.T, nsName, addr string) {
	t.Helper()
	l := listenIn(t, nsName, addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// fakeAPIServer answers what client-go informers ask of a Kubernetes API
// server for namespaces, pods and network policies: lists, watches from a
// resource version, and watches that start with the current objects and
// a bookmark (the streaming list of newer clients). Objects change only
// by the test's hand, through set.
type fakeAPIServer struct {
	mu  sync.Mutex
	rv  int
	res map[string]*fakeResource // by URL path
}

type fakeResource struct {
	listKind, apiVersion, kind string
	items                      map[string]json.RawMessage // namespace/name
	history                    []fakeEvent
	watchers                   map[chan fakeEvent]bool
}

type fakeEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
	rv     int
}

func newFakeAPIServer() *fakeAPIServer {
	s := &fakeAPIServer{res: map[string]*fakeResource{}}
	for path, kinds := range map[string][3]string{
		"/api/v1/namespaces": {"NamespaceList", "v1", "Namespace"},
		"/api/v1/pods":       {"PodList", "v1", "Pod"},
		"/apis/networking.k8s.io/v1/networkpolicies": {"NetworkPolicyList", "networking.k8s.io/v1", "NetworkPolicy"},
	} {
		s.res[path] = &fakeResource{listKind: kinds[0], apiVersion: kinds[1], kind: kinds[2],
			items: map[string]json.RawMessage{}, watchers: map[chan fakeEvent]bool{}}
	}
	return s
}

// set creates or replaces an object and tells the watchers.
func (s *fakeAPIServer) set(obj metav1.Object) {
	path := map[string]string{"*v1.Namespace": "/api/v1/namespaces", "*v1.Pod": "/api/v1/pods",
		"*v1.NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies"}[fmt.Sprintf("%T", obj)]
	s.mu.Lock()
	defer s.mu.Unlock()
	res := s.res[path]
	s.rv++
	obj.SetResourceVersion(strconv.Itoa(s.rv))
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	// TypeMeta, which the typed objects leave empty unless set.
	var m map[string]any
	json.Unmarshal(b, &m)
	m["kind"], m["apiVersion"] = res.kind, res.apiVersion
	b, _ = json.Marshal(m)
	key := obj.GetNamespace() + "/" + obj.GetName()
	typ := "ADDED"
	if _, ok := res.items[key]; ok {
		typ = "MODIFIED"
	}
	res.items[key] = b
	ev := fakeEvent{Type: typ, Object: b, rv: s.rv}
	res.history = append(res.history, ev)
	for ch := range res.watchers {
		select {
		case ch <- ev:
		default: // a watcher that fell behind is ended below by its handler
			close(ch)
			delete(res.watchers, ch)
		}
	}
}

func (s *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	res := s.res[r.URL.Path]
	s.mu.Unlock()
	if res == nil {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		s.mu.Lock()
		items := []json.RawMessage{}
		for _, it := range res.items {
			items = append(items, it)
		}
		list := map[string]any{"kind": res.listKind, "apiVersion": res.apiVersion,
			"metadata": map[string]string{"resourceVersion": strconv.Itoa(s.rv)}, "items": items}
		s.mu.Unlock()
		json.NewEncoder(w).Encode(list)
		return
	}
	s.watch(w, r, res)
}

func (s *fakeAPIServer) watch(w http.ResponseWriter, r *http.Request, res *fakeResource) {
	q := r.URL.Query()
	ch := make(chan fakeEvent, 1024)
	var first []fakeEvent
	s.mu.Lock()
	if q.Get("sendInitialEvents") == "true" {
		for _, it := range res.items {
			first = append(first, fakeEvent{Type: "ADDED", Object: it})
		}
		bookmark, _ := json.Marshal(map[string]any{"kind": res.kind, "apiVersion": res.apiVersion,
			"metadata": map[string]any{"resourceVersion": strconv.Itoa(s.rv),
				"annotations": map[string]string{"k8s.io/initial-events-end": "true"}}})
		first = append(first, fakeEvent{Type: "BOOKMARK", Object: bookmark})
	} else {
		from, _ := strconv.Atoi(q.Get("resourceVersion"))
		for _, ev := range res.history {
			if ev.rv > from {
				first = append(first, ev)
			}
		}
	}
	res.watchers[ch] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(res.watchers, ch)
		s.mu.Unlock()
	}()
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for _, ev := range first {
		enc.Encode(ev)
	}
	if flusher != nil {
		flusher.Flush()
	}
	timeout := time.Minute
	if secs, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && secs > 0 {
		timeout = time.Duration(secs) * time.Second
	}
	end := time.NewTimer(timeout)
	defer end.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			enc.Encode(ev)
			if flusher != nil {
				flusher.Flush()
			}
		case <-r.Context().Done():
			return
		case <-end.C:
			return
		}
	}
}
