package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDirErrorsNameFileAndLine(t *testing.T) {
	good := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n"
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown-field", good + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec: {podSelectr: {}}\n", `bad.yaml:6: error unmarshaling JSON: while decoding JSON: json: unknown field "podSelectr"`},
		{"wrong-kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", `bad.yaml:1: unsupported object apiVersion "v1" kind "Pod"`},
		{"duplicate", good + "---\n" + good, "bad.yaml:6: NetworkPolicy x/p is also declared at"},
		{"bad-port", good + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]\n", "spec.ingress[0].ports[0].port: 0 is not in 1-65535"},
		{"bad-endport", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec:\n  podSelector: {}\n  egress: [{ports: [{port: 90, endPort: 80}]}]\n", "endPort: 80 must be in 90-65535"},
		{"bad-except", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/25]}}]}]\n", "must be strictly within 10.0.0.0/24"},
		{"empty-peer", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec:\n  podSelector: {}\n  ingress: [{from: [{}]}]\n", "needs one of podSelector, namespaceSelector or ipBlock"},
		{"bad-selector", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q}\nspec:\n  podSelector: {matchExpressions: [{key: a, operator: Near}]}\n", "spec.podSelector"},
		{"bad-label", "apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {\"bad key!\": v}}\n", `label key "bad key!"`},
		{"not-yaml", "a: [", "bad.yaml: yaml:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadDirSkipsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"p.yaml":        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n---\n",
		".p.yaml.swp":   "garbage",
		"README":        "garbage",
		"ns.json":       `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"y","labels":{"ns":"y"}}}`,
		"empty.yml":     "",
		"comments.yaml": "# nothing yet\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Policies) != 1 || objs.Policies[0].Namespace != DefaultNamespace || objs.Namespaces["y"]["ns"] != "y" {
		t.Fatalf("loaded %+v", objs)
	}
}

// FuzzDecodePolicyFile feeds arbitrary bytes to the policy file decoder:
// every input is loaded or rejected with an error, never a panic, and
// whatever loads is valid and compiles.
func FuzzDecodePolicyFile(f *testing.F) {
	for _, glob := range []string{"testdata/golden/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: y}}\n"))
	f.Add([]byte("{a: [1, {b: *x}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs := Objects{Namespaces: map[string]map[string]string{}}
		if err := decodeFile("fuzz.yaml", data, &objs, map[string]string{}); err != nil {
			return
		}
		for i := range objs.Policies {
			if err := Validate(&objs.Policies[i]); err != nil {
				t.Fatalf("loaded an invalid policy: %v", err)
			}
		}
		_ = Compile(Snapshot{Policies: objs.Policies, Namespaces: objs.Namespaces, Pods: truthPods()})
	})
}

// TestDirFingerprintFollowsWhatLoadDirReads: the fingerprint changes with
// a policy file and not with files LoadDir skips (an editor's temporary).
func TestDirFingerprintFollowsWhatLoadDirReads(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("p.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n")
	before, err := DirFingerprint(dir)
	if err != nil {
		t.Fatal(err)
	}
	write(".p.yaml.swp", "partial")
	write("README", "notes")
	if got, _ := DirFingerprint(dir); got != before {
		t.Fatal("a file LoadDir skips changed the fingerprint")
	}
	write("p.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: z}\n")
	if got, _ := DirFingerprint(dir); got == before {
		t.Fatal("a changed policy file left the fingerprint as it was")
	}
	if _, err := DirFingerprint(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing directory has a fingerprint")
	}
}
