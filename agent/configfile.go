package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// notInFile are flags that make no sense inside a config file.
var notInFile = map[string]bool{"config": true, "print-config": true, "help": true, "version": true}

// ApplyConfigFile sets every flag the user did not pass on the command line
// from the YAML file at path, whose keys are flag names. The file is
// decoded strictly: an unknown key, a nested map or a value the flag cannot
// parse is an error naming the file, the line and the key. Values go
// through each flag's own parser, so the file validates like the command
// line.
func ApplyConfigFile(fs *pflag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &FlagError{Flag: "config", Err: err}
	}
	return applyConfigYAML(fs, path, b)
}

func applyConfigYAML(fs *pflag.FlagSet, name string, b []byte) error {
	root, err := configMap(name, b)
	if err != nil || root == nil {
		return err
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		fail := func(format string, a ...any) error {
			return &FlagError{Flag: "config", Err: fmt.Errorf("%s:%d: key %q: %s", name, k.Line, key, fmt.Sprintf(format, a...))}
		}
		f := fs.Lookup(key)
		if f == nil || notInFile[key] {
			return fail("unknown key (keys are loomd's flag names, e.g. cluster-cidr)")
		}
		if seen[key] {
			return fail("given twice")
		}
		seen[key] = true
		var value string
		switch v.Kind {
		case yaml.ScalarNode:
			value = v.Value
		case yaml.SequenceNode:
			if !strings.HasSuffix(f.Value.Type(), "Slice") {
				return fail("takes one value, not a list")
			}
			var items []string
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fail("list items must be plain values")
				}
				items = append(items, item.Value)
			}
			value = strings.Join(items, ",")
		default:
			return fail("must be a value or a list of values, not a map")
		}
		if f.Changed {
			continue // the command line wins
		}
		if err := fs.Set(key, value); err != nil {
			return fail("invalid value %q: %v", value, err)
		}
	}
	return nil
}

// configMap returns the one map of flag names to values the file holds,
// or nil when it holds none (an empty file, or empty documents only: that
// sets nothing). A second document is refused rather than read past: files
// joined with "---" would otherwise lose every setting after the first
// without a word.
func configMap(name string, b []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root *yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return nil, &FlagError{Flag: "config", Err: fmt.Errorf("%s: %v", name, err)}
		}
		if len(doc.Content) == 0 {
			continue
		}
		n := doc.Content[0]
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			continue // "---" with nothing under it
		}
		if root != nil {
			return nil, &FlagError{Flag: "config", Err: fmt.Errorf("%s:%d: a second YAML document; the file must be one map of flag names to values", name, n.Line)}
		}
		if n.Kind != yaml.MappingNode {
			return nil, &FlagError{Flag: "config", Err: fmt.Errorf("%s:%d: the file must be a map of flag names to values", name, n.Line)}
		}
		root = n
	}
}

// PrintConfig writes the effective configuration as YAML, in the same
// form --config reads.
func PrintConfig(w io.Writer, fs *pflag.FlagSet) error {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !notInFile[f.Name] {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	root := &yaml.Node{Kind: yaml.MappingNode}
	for _, n := range names {
		f := fs.Lookup(n)
		val := &yaml.Node{Kind: yaml.ScalarNode, Value: f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			val = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for _, item := range sv.GetSlice() {
				val.Content = append(val.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: item})
			}
		}
		if f.Value.Type() == "string" && f.Value.String() == "" {
			val.Style = yaml.DoubleQuotedStyle
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: n}, val)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
		return err
	}
	return enc.Close()
}
