package integration

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loomnet/loom/integration/rig"
)

// TestFullStateDisk: the file system under --state-dir fills up (a full
// /var). ADD fails with an error that says so, DEL of a running pod
// fails rather than forget it, running pods keep their traffic, and once
// space is freed the same ADD and DEL succeed; a restart afterwards finds
// exactly the pods that were attached.
func TestFullStateDisk(t *testing.T) {
	r := newRig(t)
	n1, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := r.AddNode("node2")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(n1.Dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("loom-test-state", state, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs for the state dir: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(state, unix.MNT_DETACH) })
	startReady(t, n1)
	startReady(t, n2, n1)
	a, b := addPod(t, n1, "a"), addPod(t, n2, "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)

	filler := filepath.Join(state, "filler")
	fillUp(t, filler)

	// bbolt reuses free pages of its file, so the first few ADDs may still
	// fit; keep adding until the disk is what stops them.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var failed *rig.Pod
	var added []*rig.Pod
	for i := 0; i < 200 && failed == nil; i++ {
		p, err := n1.NewPodNS("full")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Add(ctx); err != nil {
			t.Logf("ADD with a full state disk: %v", err)
			if !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("ADD failed, but not naming the full disk: %v", err)
			}
			failed = p
			break
		}
		added = append(added, p)
	}
	if failed == nil {
		t.Fatal("200 ADDs succeeded on a full state disk")
	}
	t.Logf("%d ADDs fit before the disk stopped them", len(added))
	// The operator reading loomd's log sees it too, not only the runtime.
	logged := regexp.MustCompile(`"msg":"local API request failed".*"verb":"ADD".*no space left on device`)
	if !logged.MatchString(rig.Tail(n1.LogPath(), wholeLog)) {
		t.Fatal("loomd did not log the failed ADD and its reason")
	}
	// What was attached before still carries traffic.
	waitAllReach(t, append([]*rig.Pod{a, b}, added...), 30*time.Second)
	if err := n1.WaitReady(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// DEL cannot forget the pod on a full disk: it fails, naming the
	// disk, and the runtime's retry finishes it once there is space.
	if len(added) == 0 {
		t.Fatal("no ADD fit after filling the disk; the DEL check needs one")
	}
	if err := added[0].Del(ctx); err == nil {
		t.Log("DEL fit on the full disk (bbolt reused a free page)")
		added = added[1:]
	} else if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("DEL failed, but not naming the full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := failed.Add(ctx); err != nil {
		t.Fatalf("retried ADD after freeing space: %v", err)
	}
	waitAllReach(t, []*rig.Pod{failed, a, b}, 30*time.Second)
	for _, p := range added {
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
	}

	n1.Stop(syscall.SIGTERM)
	startReady(t, n1, n2)
	pods, err := n1.Client().Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range pods {
		got[p.IP] = true
	}
	want := map[string]bool{netip.PrefixFrom(a.IP, 32).String(): true, netip.PrefixFrom(failed.IP, 32).String(): true}
	if !maps.Equal(got, want) {
		t.Fatalf("after restart the node holds %v, want %v", got, want)
	}
	waitAllReach(t, []*rig.Pod{failed, a, b}, 30*time.Second)
}

// fillUp writes to path until its file system is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	// Smaller writes take the last partial block too.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
}

// TestStateUnreadableAtRunTime: the state database becomes unreadable
// while loomd runs (a failing disk; here its pages are overwritten in
// place). A reconcile must then leave the data plane as it is: the
// desired state it would compute holds no pods, and applying it would cut
// every pod off. Pods keep their traffic through the resyncs that follow,
// and the failure is logged by name.
func TestStateUnreadableAtRunTime(t *testing.T) {
	r := newRig(t, "--resync-interval", "1s")
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	waitAllReach(t, []*rig.Pod{a, b}, 30*time.Second)

	// Everything past bbolt's two meta pages, so every read fails.
	db := filepath.Join(nodes[0].Dir, "state", "loom.db")
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	const metaPages = 2 * 4096
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, int(st.Size()-metaPages)), metaPages); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitLogged(t, nodes[0], "read pod allocations; data plane left as it is", 15*time.Second)
	// Three seconds of pings span three resyncs, each failing to read the
	// pods; the route to pod a and the pings must outlast them.
	out, _ := a.Exec("ping", "-D", "-i", "0.01", "-c", "300", "-W", "1", b.IP.String())
	if err := pingLosses(out, 300); err != nil {
		t.Fatalf("pods lost traffic while the state database was unreadable: %v", err)
	}
	if route, _ := nodes[0].Exec("ip", "route", "show", a.IP.String()); !strings.Contains(route, "proto 76") {
		t.Fatalf("the route to pod a is gone from node1: %q", route)
	}
	// The node keeps serving the pods it has, and says what fails.
	status, err := nodes[0].Status()
	if err != nil {
		t.Fatal(err)
	}
	if st := status.Node; !st.Ready || !strings.Contains(st.ReconcileError, "read pod allocations") {
		t.Fatalf("status: ready %v, reconcile error %q; want ready and the failure named", st.Ready, st.ReconcileError)
	}
}
