package policy

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// truthPods is the x/y/z × a/b/c pod grid of the upstream e2e suite; the
// pods of namespace x run on this node.
func truthPods() []Pod {
	var pods []Pod
	for i, ns := range []string{"x", "y", "z"} {
		for j, name := range []string{"a", "b", "c"} {
			p := Pod{Namespace: ns, Name: name, IP: netip.AddrFrom4([4]byte{10, 244, byte(i), byte(10 + j)}),
				Labels: map[string]string{"pod": name}}
			if ns == "x" {
				p.HostIf = fmt.Sprintf("lm%s%s", ns, name)
			}
			pods = append(pods, p)
		}
	}
	return pods
}

func truthNamespaces() map[string]map[string]string {
	return map[string]map[string]string{"x": {"ns": "x"}, "y": {"ns": "y"}, "z": {"ns": "z"}}
}

// TestCompileGolden compiles each policy file of testdata/golden against
// the pod grid and compares the rendered rules with the .golden file next
// to it (go test ./policy -update rewrites them).
func TestCompileGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "p.yaml"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			ns := truthNamespaces()
			for k, v := range objs.Namespaces {
				ns[k] = v
			}
			got := Compile(Snapshot{Policies: objs.Policies, Namespaces: ns, Pods: truthPods()}).Render()
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("compiled rules differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestBlockPrefixes(t *testing.T) {
	for _, tc := range []struct {
		cidr   string
		except []string
		want   string
	}{
		{"10.0.0.0/24", nil, "[10.0.0.0/24]"},
		{"10.0.0.0/24", []string{"10.0.0.0/25"}, "[10.0.0.128/25]"},
		{"10.0.0.0/30", []string{"10.0.0.1/32"}, "[10.0.0.0/32 10.0.0.2/31]"},
		{"10.0.0.5/24", []string{"10.0.0.0/26", "10.0.0.192/26"}, "[10.0.0.64/26 10.0.0.128/26]"},
	} {
		got, err := blockPrefixes(&ipBlock{CIDR: tc.cidr, Except: tc.except})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s except %v = %v, want %s", tc.cidr, tc.except, got, tc.want)
		}
	}
	if _, err := blockPrefixes(&ipBlock{CIDR: "fd00::/64"}); err == nil {
		t.Error("IPv6 block accepted")
	}
}
