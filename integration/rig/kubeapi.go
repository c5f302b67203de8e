package rig

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
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FakeAPIPort is where a FakeAPIServer is served on each node's loopback,
// and where WriteKubeconfig points.
const FakeAPIPort = 6443

// WriteKubeconfig writes a kubeconfig for a FakeAPIServer served on the
// loopback of the namespace the client runs in.
func WriteKubeconfig(path string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:%d"}}]
users: [{name: loom, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: loom}}]
current-context: fake
`, FakeAPIPort)), 0o600)
}

// FakeAPIServer answers what client-go informers ask of a Kubernetes API
// server for namespaces, pods and network policies: lists, watches from a
// resource version, and watches that start with the current objects and
// a bookmark (the streaming list of newer clients). Objects change only
// by the caller's hand, through Set. It stands in for kube-apiserver,
// which this machine cannot run, so that tests and benchmarks drive the
// real loom-kube-policy helper.
type FakeAPIServer struct {
	mu   sync.Mutex
	rv   int
	res  map[string]*fakeResource // by URL path
	down bool
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

func NewFakeAPIServer() *FakeAPIServer {
	s := &FakeAPIServer{res: map[string]*fakeResource{}}
	for path, kinds := range map[string][3]string{
		"/api/v1/namespaces": {"NamespaceList", "v1", "Namespace"},
		"/api/v1/pods":       {"PodList", "v1", "Pod"},
		"/api/v1/nodes":      {"NodeList", "v1", "Node"},
		"/apis/networking.k8s.io/v1/networkpolicies": {"NetworkPolicyList", "networking.k8s.io/v1", "NetworkPolicy"},
	} {
		s.res[path] = &fakeResource{listKind: kinds[0], apiVersion: kinds[1], kind: kinds[2],
			items: map[string]json.RawMessage{}, watchers: map[chan fakeEvent]bool{}}
	}
	return s
}

// fakePaths maps the objects the fake serves to their collections.
var fakePaths = map[string]string{"*v1.Namespace": "/api/v1/namespaces", "*v1.Pod": "/api/v1/pods",
	"*v1.Node": "/api/v1/nodes", "*v1.NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies"}

// Set creates or replaces an object and tells the watchers.
func (s *FakeAPIServer) Set(obj metav1.Object) { s.change(obj, false) }

// Delete removes an object and tells the watchers.
func (s *FakeAPIServer) Delete(obj metav1.Object) { s.change(obj, true) }

func (s *FakeAPIServer) change(obj metav1.Object, del bool) {
	path := fakePaths[fmt.Sprintf("%T", obj)]
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
	if del {
		typ = "DELETED"
		delete(res.items, key)
	} else {
		res.items[key] = b
	}
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

// SetDown makes the server answer every request with 503 Service
// Unavailable and ends the watches open, as an API server in an outage;
// false serves again.
func (s *FakeAPIServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	if !down {
		return
	}
	for _, res := range s.res {
		for ch := range res.watchers {
			close(ch)
			delete(res.watchers, ch)
		}
	}
}

func (s *FakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	res, down := s.res[r.URL.Path], s.down
	s.mu.Unlock()
	if down {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}`, http.StatusServiceUnavailable)
		return
	}
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

func (s *FakeAPIServer) watch(w http.ResponseWriter, r *http.Request, res *fakeResource) {
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
	if s.down {
		close(ch) // down since the request came in: the watch ends at once
	} else {
		res.watchers[ch] = true
	}
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

// ServeAPI serves h on FakeAPIPort of the loopback of network namespace
// nsName until the returned stop is called.
func ServeAPI(nsName string, h http.Handler) (stop func(), err error) {
	l, err := ListenIn(nsName, fmt.Sprintf("127.0.0.1:%d", FakeAPIPort))
	if err != nil {
		return nil, fmt.Errorf("serve the API: %w", err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

// ListenIn opens a TCP listener inside network namespace nsName; the
// socket stays in that namespace whatever thread later uses it.
func ListenIn(nsName, addr string) (net.Listener, error) {
	return openIn(nsName, addr, func() (net.Listener, error) { return net.Listen("tcp4", addr) })
}

// ServeTCPIn accepts and closes TCP connections on addr inside network
// namespace nsName until stop is called: a server that a connect can
// reach, and no more.
func ServeTCPIn(nsName, addr string) (stop func(), err error) {
	l, err := ListenIn(nsName, addr)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { l.Close() }, nil
}

// ListenPacketIn opens a UDP socket inside network namespace nsName (to
// hold a port, or to receive).
func ListenPacketIn(nsName, addr string) (net.PacketConn, error) {
	return openIn(nsName, addr, func() (net.PacketConn, error) { return net.ListenPacket("udp4", addr) })
}

func openIn[S any](nsName, addr string, open func() (S, error)) (S, error) {
	var s S
	err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		var err error
		s, err = open()
		return err
	})
	if err != nil {
		return s, fmt.Errorf("listen on %s in %s: %w", addr, nsName, err)
	}
	return s, nil
}

// ChildProcess returns the pid of parent's child process called name.
func ChildProcess(parent int, name string) (int, error) {
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
		return strconv.Atoi(strings.TrimSpace(string(b[:open])))
	}
	return 0, fmt.Errorf("no %s process under pid %d", name, parent)
}
