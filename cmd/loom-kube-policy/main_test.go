package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// TestRunOutsideCluster: bad flags exit 2, and outside a cluster the
// helper exits 1 with a last line loomd can show as the reason.
func TestRunOutsideCluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--interval", "0s"}, 2, "loom-kube-policy: invalid --interval: 0s: must be positive"},
		{[]string{"--sync-timeout", "-1s"}, 2, "loom-kube-policy: invalid --sync-timeout"},
		{[]string{"--interval", "abc"}, 2, `loom-kube-policy: invalid argument "abc" for "--interval" flag`},
		{[]string{"--interval"}, 2, "loom-kube-policy: flag needs an argument: --interval"},
		{[]string{"--resync", "1s"}, 2, "loom-kube-policy: unknown flag: --resync"},
		{[]string{"extra"}, 2, `loom-kube-policy: unknown command "extra"`},
		{nil, 1, "loom-kube-policy: kubernetes: unable to load in-cluster configuration"},
	} {
		stderr := captureStderr(t, func() {
			if code := run(tc.args); code != tc.code {
				t.Errorf("run(%q) = %d, want %d", tc.args, code, tc.code)
			}
		})
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, tc.want) {
			t.Errorf("run(%q) last line %q, want it to start with %q", tc.args, last, tc.want)
		}
	}
}

func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stderr = saved
	w.Close()
	return <-done
}
