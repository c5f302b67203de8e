package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// Objects are the policy-relevant objects a source declares.
type Objects struct {
	Policies []networkingv1.NetworkPolicy
	// Namespaces maps a declared namespace to its labels.
	Namespaces map[string]map[string]string
}

// MaxPolicyFileSize bounds one policy file; policies are small.
const MaxPolicyFileSize = 4 << 20

// LoadDir reads every *.yaml, *.yml and *.json file of dir (hidden files
// skipped) as NetworkPolicy and Namespace objects, strictly: an unknown
// field, another kind, a duplicate or an invalid policy is an error that
// names the file and the line of the document.
func LoadDir(dir string) (Objects, error) {
	paths, err := policyFiles(dir)
	if err != nil {
		return Objects{}, err
	}
	objs := Objects{Namespaces: map[string]map[string]string{}}
	seen := map[string]string{}
	for _, path := range paths {
		data, err := readLimited(path)
		if err != nil {
			return Objects{}, err
		}
		if err := decodeFile(path, data, &objs, seen); err != nil {
			return Objects{}, err
		}
	}
	slices.SortFunc(objs.Policies, func(a, b networkingv1.NetworkPolicy) int {
		return strings.Compare(policyName(&a), policyName(&b))
	})
	return objs, nil
}

// policyFiles lists, in name order, the files of dir that LoadDir reads:
// *.yaml, *.yml and *.json, hidden ones (editors' temporaries, the
// "..data" links of ConfigMap mounts) skipped.
func policyFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !isPolicyFile(name) {
			continue
		}
		out = append(out, filepath.Join(dir, name))
	}
	return out, nil
}

// DirFingerprint hashes the names and contents of the files LoadDir reads,
// so a watcher can tell when the directory needs loading again. Reading
// follows symlinks, as in ConfigMap mounts.
func DirFingerprint(dir string) ([sha256.Size]byte, error) {
	paths, err := policyFiles(dir)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	h := sha256.New()
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // removed meanwhile: the next look sees the change
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(path), len(b))
		h.Write(b)
	}
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

func isPolicyFile(name string) bool {
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy file %s: %w", path, err)
	}
	if len(data) > MaxPolicyFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxPolicyFileSize)
	}
	return data, nil
}

// decodeFile splits a file into YAML documents and decodes each strictly.
// seen maps an object's identity to where it was first declared.
func decodeFile(path string, data []byte, objs *Objects, seen map[string]string) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for doc := 1; ; doc++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(node.Content) == 0 || node.Content[0].Tag == "!!null" {
			continue // an empty document, e.g. after a trailing "---"
		}
		where := fmt.Sprintf("%s:%d", path, node.Content[0].Line)
		// Through JSON, not back to YAML: sigs.k8s.io/yaml reads YAML 1.1,
		// where an unquoted y or no is a boolean, while this decoder reads
		// YAML 1.2 as users expect (a label value "y" stays a string).
		var v any
		if err := node.Decode(&v); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := decodeObject(raw, objs, seen, where); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
}

func decodeObject(raw []byte, objs *Objects, seen map[string]string, where string) error {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(raw, &tm); err != nil {
		return err
	}
	switch {
	case tm.Kind == "NetworkPolicy" && tm.APIVersion == "networking.k8s.io/v1":
		var p networkingv1.NetworkPolicy
		if err := sigsyaml.UnmarshalStrict(raw, &p); err != nil {
			return err
		}
		if p.Namespace == "" {
			p.Namespace = DefaultNamespace
		}
		if err := Validate(&p); err != nil {
			return fmt.Errorf("NetworkPolicy %s: %w", policyName(&p), err)
		}
		if err := declare(seen, "NetworkPolicy "+policyName(&p), where); err != nil {
			return err
		}
		objs.Policies = append(objs.Policies, p)
	case tm.Kind == "Namespace" && tm.APIVersion == "v1":
		var ns corev1.Namespace
		if err := sigsyaml.UnmarshalStrict(raw, &ns); err != nil {
			return err
		}
		if err := ValidPodMeta(ns.Name, "", ns.Labels); err != nil {
			return fmt.Errorf("namespace %q: %w", ns.Name, err)
		}
		if err := declare(seen, "Namespace "+ns.Name, where); err != nil {
			return err
		}
		lbls := map[string]string{}
		for k, v := range ns.Labels {
			lbls[k] = v
		}
		objs.Namespaces[ns.Name] = lbls
	default:
		return fmt.Errorf("unsupported object apiVersion %q kind %q (want networking.k8s.io/v1 NetworkPolicy or v1 Namespace)", tm.APIVersion, tm.Kind)
	}
	return nil
}

// declare records that object id is declared at where, refusing a second
// declaration of the same object.
func declare(seen map[string]string, id, where string) error {
	if prev, dup := seen[id]; dup {
		return fmt.Errorf("%s is also declared at %s", id, prev)
	}
	seen[id] = where
	return nil
}
