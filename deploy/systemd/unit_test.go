// Package systemd holds Loom's systemd unit and the example configuration
// it starts loomd with; its test keeps them consistent with what loomd and
// a hitless restart need.
package systemd

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// unit reads a unit file into section -> key -> values (a key may repeat).
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: malformed line %q", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestUnitKeepsRestartsHitlessAndNeverGivesUp(t *testing.T) {
	u := unit(t, "loomd.service")
	for _, want := range []struct{ section, key, value string }{
		// Restarts never tear the data plane down; keep restarting, whatever
		// the start rate, while the network comes up.
		{"Service", "Restart", "always"},
		{"Unit", "StartLimitIntervalSec", "0"},
		// The userspace WireGuard helper must outlive loomd.
		{"Service", "KillMode", "process"},
		// The example configuration is installed where the unit reads it.
		{"Service", "ExecStart", "/usr/local/bin/loomd --config /etc/loom/loom.yaml"},
		// loomd reloads on SIGHUP (and refuses a bad configuration).
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u[want.section][want.key]; len(got) != 1 || got[0] != want.value {
			t.Errorf("[%s] %s = %q, want %q", want.section, want.key, got, want.value)
		}
	}
	caps := strings.Fields(strings.Join(u["Service"]["AmbientCapabilities"], " "))
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_RAW"} {
		if !strings.Contains(strings.Join(caps, " "), c) {
			t.Errorf("AmbientCapabilities %v lack %s", caps, c)
		}
	}
}
