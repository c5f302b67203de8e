package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
}
