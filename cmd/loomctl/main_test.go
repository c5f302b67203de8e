package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loomnet/loom/api"
)

func TestKeygenPrintsA32ByteKey(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(k) != 32 {
		t.Fatalf("key %q: %v (%d bytes)", out.String(), err, len(k))
	}
}

func TestExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--socket", "/nonexistent/loom.sock"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "/nonexistent/loom.sock") || !strings.Contains(errb.String(), "loomd") {
		t.Fatalf("missing socket: exit %d, %q; want 1 and a line naming the socket and loomd", code, errb.String())
	}
	for _, args := range [][]string{{"bogus"}, {"rmpeer"}, {"status", "-o", "xml"}, {"status", "--nope"},
		{"keyring", "instal", "KEY"}, {"policy", "extra"}, {"completion", "tcsh"}, {"help", "stauts"}} {
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2 (usage)", args, code, errb.String())
		}
	}
}

func TestInstallCNI(t *testing.T) {
	src := filepath.Join(t.TempDir(), "loom")
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o644)
	dir := filepath.Join(t.TempDir(), "bin")
	var out, errb bytes.Buffer
	if code := run([]string{"install-cni", "--from", src, "--to", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	st, err := os.Stat(filepath.Join(dir, "loom"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed plugin: %v %v", st, err)
	}

	// A bad source is refused by name and leaves the installed plugin as
	// it was: an empty one in its place would fail every pod start.
	empty := filepath.Join(t.TempDir(), "loom")
	os.WriteFile(empty, nil, 0o755)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, []byte("x"), 0o644)
	for _, c := range []struct {
		from, to, want string
	}{
		{filepath.Join(t.TempDir(), "absent"), dir, "--from: open"},
		{t.TempDir(), dir, "not a regular file"},
		{empty, dir, "--from " + empty + ": the file is empty"},
		{src, notDir, "--to: mkdir " + notDir},
	} {
		errb.Reset()
		code := run([]string{"install-cni", "--from", c.from, "--to", c.to}, &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("install-cni --from %s --to %s: exit %d %q, want 1 and %q", c.from, c.to, code, errb.String(), c.want)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "loom")); err != nil || string(b) != "#!/bin/sh\n" {
			t.Fatalf("after install-cni --from %s the installed plugin holds %q (%v), want it unchanged", c.from, b, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("after install-cni --from %s the directory holds %d files, want the plugin alone", c.from, len(ents))
		}
	}
}

// TestStatusShowsAFailingReconcile: a ready node whose reconciles fail
// (an unreadable state database) keeps its data plane, so it stays ready;
// status must still say so, and say nothing when all is well.
func TestStatusShowsAFailingReconcile(t *testing.T) {
	st := api.Status{Node: api.NodeStatus{Name: "node1", Ready: true}}
	var out bytes.Buffer
	if err := printStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "Reconcile:") {
		t.Fatalf("a node whose reconciles succeed shows a Reconcile line:\n%s", out.String())
	}
	st.Node.ReconcileError = "read pod allocations; data plane left as it is: state database is corrupt"
	out.Reset()
	if err := printStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Reconcile:") || !strings.Contains(out.String(), st.Node.ReconcileError) {
		t.Fatalf("status of a node whose reconciles fail:\n%s", out.String())
	}
}

// TestPrintPolicyWhilePending: while the policies are not known, loomctl
// says so, and never that traffic is allowed.
func TestPrintPolicyWhilePending(t *testing.T) {
	var out bytes.Buffer
	st := api.PolicyStatus{Source: "files", Policies: []string{}, Pods: []api.PodPolicy{},
		Error: "db.yaml: line 2: bad", Pending: "network policies not known yet: ... (every pod is isolated meanwhile)"}
	if err := printPolicy(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NOT KNOWN YET", "every pod is isolated meanwhile", "db.yaml: line 2: bad"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "allowed") || strings.Contains(out.String(), "previous set in force") {
		t.Errorf("output claims what is not enforced:\n%s", out.String())
	}
}
