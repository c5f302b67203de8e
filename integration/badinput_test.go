package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/loomnet/loom/integration/rig"
)

// TestLoomdRejectsBadFlags runs the real loomd with each invalid flag in a
// node namespace: it must exit non-zero with one message naming the flag,
// and must not have touched the namespace.
func TestLoomdRejectsBadFlags(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(r.Dir, "bad.key")
	os.WriteFile(badKey, []byte("bm90IGEga2V5\n"), 0o600)
	base := []string{"--node-name", "n", "--iface", "eth0", "--state-dir", filepath.Join(n.Dir, "state"),
		"--socket", filepath.Join(n.Dir, "s.sock"), "--cni-conf-dir", n.ConfDir, "--metrics-addr", ""}
	cases := []struct {
		flag string
		args []string
		env  string
	}{
		{"cluster-cidr", []string{"--insecure-gossip", "--cluster-cidr", "10.244.0.1/16"}, ""},
		{"cluster-cidr", []string{"--insecure-gossip", "--cluster-cidr", "not-a-cidr"}, ""},
		// The rig's underlay is 10.200.0.0/24.
		{"cluster-cidr", []string{"--insecure-gossip", "--cluster-cidr", "10.200.0.0/16"}, ""},
		{"socket", []string{"--insecure-gossip", "--socket", "/run/" + strings.Repeat("s", 110)}, ""},
		{"underlay-cidrs", []string{"--insecure-gossip", "--underlay-cidrs", "10.201.0.0/24"}, ""},
		{"subnet-prefix", []string{"--insecure-gossip", "--subnet-prefix", "16"}, ""},
		{"subnet-prefix", []string{"--insecure-gossip", "--subnet-prefix", "12"}, ""},
		{"iface", []string{"--insecure-gossip", "--iface", "nosuch0"}, ""},
		{"gossip-key-file", []string{"--gossip-key-file", "/nonexistent/key"}, ""},
		{"gossip-key-file", []string{"--gossip-key-file", badKey}, ""},
		{"gossip-key-file", nil, ""}, // neither a key nor the explicit opt-out
		{"vni", []string{"--insecure-gossip"}, "LOOM_VNI=banana"},
		{"mtu", []string{"--insecure-gossip", "--mtu", "99"}, ""},
		// Held below, as Docker Swarm's gossip holds 7946.
		{"gossip-port", []string{"--insecure-gossip", "--gossip-port", "7999"}, ""},
	}
	listenIn(t, n.NS, "0.0.0.0:7999")
	for _, c := range cases {
		args := append(append([]string{"--net=/run/netns/" + n.NS, "--", filepath.Join(binaries(t), "loomd")}, base...), c.args...)
		// A case that is accidentally valid would start an agent and block:
		// the deadline turns that into a failure instead of a hang.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, "nsenter", args...)
		cmd.Env = os.Environ()
		if c.env != "" {
			cmd.Env = append(cmd.Env, c.env)
		}
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%v %s: exit %v, want non-zero", c.args, c.env, err)
			continue
		}
		// Warnings logged before the error (--insecure-gossip's) are JSON
		// lines; the error is the one plain line.
		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.HasPrefix(line, "{") {
				msgs = append(msgs, line)
			}
		}
		if len(msgs) != 1 || !strings.Contains(msgs[0], "--"+c.flag) {
			t.Errorf("%v %s: output %q does not name --%s in one line", c.args, c.env, out, c.flag)
		}
	}
	if _, err := n.Exec("ip", "-o", "link", "show", "loom.1"); err == nil {
		t.Fatal("a rejected loomd created the VXLAN device")
	}
}

// TestAddWithAgentDownIsTryAgainLater: a runtime calling ADD while loomd is
// down gets CNI error 11 naming the socket, and nothing is left attached.
func TestAddWithAgentDownIsTryAgainLater(t *testing.T) {
	r := newRig(t)
	n := startNodes(t, r, 1)[0]
	n.Stop(syscall.SIGTERM)
	p, err := n.NewPodNS("orphan")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = p.Add(ctx)
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, n.Socket) {
		t.Fatalf("ADD with agent down: %v, want CNI code 11 naming %s", err, n.Socket)
	}
	if _, err := p.Exec("ip", "-o", "link", "show", "eth0"); err == nil {
		t.Fatal("failed ADD left an interface in the pod")
	}
	// The runtime retries once the agent is back: the same ADD succeeds.
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(10*time.Second, func() error { return p.Add(ctx) }); err != nil {
		t.Fatal(err)
	}
	if err := rig.Ping(n.NS, p.IP); err != nil {
		t.Fatal(err)
	}
}

// TestConfigFile: loomd takes its flags from a --config YAML file, a flag
// on the command line wins over the file, and --print-config prints the
// result; the node runs with what it printed.
func TestConfigFile(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(n.Dir, "loomd.yaml")
	yaml := "cluster-cidr: 10.250.0.0/16\nsubnet-prefix: 25\nvni: 5\nvxlan-port: 4791\ngossip-key-file: " + r.KeyFile + "\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	withConfig := func(args []string) []string { return append(args, "--config", conf, "--subnet-prefix", "26") }
	printed, err := n.Exec(filepath.Join(binaries(t), "loomd"), append(withConfig(nil), "--print-config")...)
	if err != nil {
		t.Fatalf("--print-config: %v\n%s", err, printed)
	}
	for _, want := range []string{"cluster-cidr: 10.250.0.0/16", "subnet-prefix: 26", "vni: 5", "vxlan-port: 4791"} {
		if !strings.Contains(printed, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, printed)
		}
	}
	if err := n.StartWith(withConfig); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if subnet := netip.MustParsePrefix(st.Node.Subnet); subnet.Bits() != 26 || !netip.MustParsePrefix("10.250.0.0/16").Contains(subnet.Addr()) {
		t.Fatalf("subnet %s, want a /26 of 10.250.0.0/16", subnet)
	}
	if dev := mustExec(t, n, "ip", "-d", "link", "show", "loom.5"); !strings.Contains(dev, "id 5 ") || !strings.Contains(dev, "dstport 4791") {
		t.Fatalf("loom.5 is not VNI 5 on port 4791:\n%s", dev)
	}
}

// TestReloadOnHangup: SIGHUP (systemctl reload) makes loomd check its
// configuration read anew. A bad edit is refused with the reason, and the
// agent runs on as it was; a good one makes it start again in place (same
// process) with the new configuration, pods untouched.
func TestReloadOnHangup(t *testing.T) {
	r := newRig(t)
	n, err := r.AddNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(n.Dir, "loomd.yaml")
	write := func(body string) {
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("metrics-addr: 127.0.0.1:9641\n")
	startWith := func(args []string) []string { return append(args, "--config", conf) }
	if err := n.StartWith(startWith); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	pod := addPod(t, n, "a")
	pid := n.Pid()
	metricsAt := func(port int) error {
		code, _, err := rig.GetIn(n.NS, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil || code != 200 {
			return fmt.Errorf("metrics on port %d: %d %v", port, code, err)
		}
		return nil
	}
	write("metrics-addr: 127.0.0.1:9642\ncluster-cidr: banana\n")
	syscall.Kill(pid, syscall.SIGHUP)
	waitLogged(t, n, "reload refused", 20*time.Second)
	if log := rig.Tail(n.LogPath(), wholeLog); !strings.Contains(log, "--cluster-cidr") {
		t.Fatalf("the refusal does not name --cluster-cidr:\n%s", log)
	}
	if err := metricsAt(9641); err != nil || !processRunning(pid) {
		t.Fatalf("after a refused reload the agent is not running as before: %v", err)
	}
	write("metrics-addr: 127.0.0.1:9642\n")
	syscall.Kill(pid, syscall.SIGHUP)
	if err := rig.Eventually(30*time.Second, func() error { return metricsAt(9642) }); err != nil {
		t.Fatal(err)
	}
	if n.Pid() != pid || !processRunning(pid) {
		t.Fatalf("loomd (pid %d) did not start again in place", pid)
	}
	if err := n.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pod.Check(ctx); err != nil {
		t.Fatalf("the pod does not pass CHECK after the reload: %v", err)
	}
}
