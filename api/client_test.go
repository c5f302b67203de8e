package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/internal/unixtest"
)

// serve runs handler behind net/http on a unix socket, as loomd does.
func serve(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "loom.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// serveRaw answers every connection with reply, for answers net/http
// would never write.
func serveRaw(t *testing.T, reply string) string {
	sock, _ := unixtest.CannedServer(t, reply)
	return sock
}

func TestClientSendsRequestAndDecodesAnswer(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		var req AllocateRequest
		if r.Method != "POST" || r.URL.Path != "/v1/pods/allocate" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, fmt.Sprintf("unexpected %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type")), http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(Allocation{ContainerID: req.ContainerID, IfName: req.IfName, IP: "10.244.1.5/24"})
	})
	// Timeout 0: bounded by the context alone.
	a, err := NewClient(sock, 0).Allocate(context.Background(), AllocateRequest{ContainerID: "c1", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ContainerID != "c1" || a.IfName != "eth0" || a.IP != "10.244.1.5/24" {
		t.Fatalf("allocation %+v", a)
	}
}

func TestClientReadsAnswersLargerThanOneBuffer(t *testing.T) {
	// net/http gives a small answer a Content-Length and ends a large one
	// by closing the connection; both must arrive whole.
	for _, n := range []int{1, 5000} {
		want := make([]Allocation, n)
		for i := range want {
			want[i] = Allocation{ContainerID: fmt.Sprintf("container-%d", i), IfName: "eth0"}
		}
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/pods" {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(want)
		})
		got, err := NewClient(sock, time.Second).Pods(context.Background())
		if err != nil {
			t.Fatalf("%d pods: %v", n, err)
		}
		if len(got) != n || got[n-1].ContainerID != want[n-1].ContainerID {
			t.Fatalf("%d pods: got %d", n, len(got))
		}
	}
}

func TestClientTakesNoContentWithoutWaitingForTheAgent(t *testing.T) {
	// The agent answers some requests with 204 and then keeps working on
	// the same connection's handler; the answer is complete at its header.
	working := make(chan struct{})
	defer close(working)
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		http.NewResponseController(w).Flush()
		<-working
	})
	if err := NewClient(sock, 2*time.Second).Attach(context.Background(), PodRef{ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
}

func TestClientPassesQueryParameters(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Allocation{ContainerID: r.URL.Query().Get("containerID"), IfName: r.URL.Query().Get("ifName")})
	})
	a, err := NewClient(sock, time.Second).Get(context.Background(), PodRef{ContainerID: "a b&c", IfName: "net1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ContainerID != "a b&c" || a.IfName != "net1" {
		t.Fatalf("allocation %+v", a)
	}
}

func TestClientReturnsAgentErrors(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/pods/attach" {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(Error{Code: "conflict", Message: "veth missing"})
			return
		}
		http.Error(w, "upstream gone", http.StatusBadGateway)
	})
	c := NewClient(sock, time.Second)
	var e *Error
	err := c.Attach(context.Background(), PodRef{ContainerID: "c", IfName: "eth0"})
	if !errors.As(err, &e) || e.HTTPStatus != http.StatusConflict || e.Code != "conflict" || e.Message != "veth missing" {
		t.Fatalf("attach: %v (%+v)", err, e)
	}
	err = c.Release(context.Background(), PodRef{ContainerID: "c", IfName: "eth0"})
	if !errors.As(err, &e) || e.HTTPStatus != http.StatusBadGateway || e.Code != CodeInternal || e.Message != "agent answered 502 Bad Gateway" {
		t.Fatalf("release: %v (%+v)", err, e)
	}
	if errors.Is(err, ErrUnreachable) {
		t.Fatalf("an answer is not unreachable: %v", err)
	}
}

func TestClientReportsUnreachableAgent(t *testing.T) {
	silent := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held <- c // never answered
		}
	}()
	for _, tc := range []struct {
		name, socket string
		timeout      time.Duration
		cancelAfter  time.Duration // 0: never
		want         string
	}{
		{"no socket", filepath.Join(t.TempDir(), "none.sock"), time.Second, 0, "no such file"},
		{"agent silent past the timeout", silent, 200 * time.Millisecond, 0, "timeout"},
		{"context cancelled while waiting", silent, time.Minute, 100 * time.Millisecond, "context canceled"},
		{"connection closed without answer", serveRaw(t, ""), time.Second, 0, "EOF"},
		{"not HTTP", serveRaw(t, "SSH-2.0-OpenSSH\r\n\r\n"), time.Second, 0, "malformed status line"},
		{"chunked answer", serveRaw(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), time.Second, 0, "Transfer-Encoding"},
		{"body shorter than its length", serveRaw(t, "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}"), time.Second, 0, "read body"},
		{"answer over the limit", serveRaw(t, fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n", maxResponse+1)), time.Second, 0, "exceeds the limit"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		if tc.cancelAfter > 0 {
			time.AfterFunc(tc.cancelAfter, cancel)
		}
		start := time.Now()
		_, err := NewClient(tc.socket, tc.timeout).Status(ctx)
		cancel()
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want unreachable naming %q", tc.name, err, tc.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", tc.name, d)
		}
	}
}
