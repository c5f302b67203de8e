package agent

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func testFlags() (*pflag.FlagSet, *Config) {
	c := DefaultConfig()
	fs := pflag.NewFlagSet("loomd", pflag.ContinueOnError)
	fs.StringVar(&c.ClusterCIDR, "cluster-cidr", c.ClusterCIDR, "")
	fs.IntVar(&c.VNI, "vni", c.VNI, "")
	fs.StringSliceVar(&c.Join, "join", nil, "")
	fs.DurationVar(&c.DeadNodeGrace, "dead-node-grace", c.DeadNodeGrace, "")
	fs.BoolVar(&c.InsecureGossip, "insecure-gossip", false, "")
	fs.String("config", "", "")
	return fs, &c
}

func TestConfigFileSetsFlagsCommandLineWins(t *testing.T) {
	fs, c := testFlags()
	if err := fs.Parse([]string{"--vni", "7"}); err != nil {
		t.Fatal(err)
	}
	yml := "cluster-cidr: 10.50.0.0/16\nvni: 3\njoin: [10.0.0.1, 10.0.0.2:7946]\ndead-node-grace: 5s\ninsecure-gossip: true\n"
	if err := applyConfigYAML(fs, "loom.yaml", []byte(yml)); err != nil {
		t.Fatal(err)
	}
	if c.ClusterCIDR != "10.50.0.0/16" || c.VNI != 7 || len(c.Join) != 2 || c.DeadNodeGrace.String() != "5s" || !c.InsecureGossip {
		t.Fatalf("config = %+v", c)
	}
	var out bytes.Buffer
	if err := PrintConfig(&out, fs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster-cidr: 10.50.0.0/16", "vni: \"7\"", "join: [10.0.0.1, '10.0.0.2:7946']"} {
		if !strings.Contains(out.String(), strings.ReplaceAll(want, `"7"`, "7")) && !strings.Contains(out.String(), want) {
			t.Errorf("print-config lacks %q:\n%s", want, out.String())
		}
	}
	// What print-config prints, --config reads back.
	fs2, c2 := testFlags()
	if err := applyConfigYAML(fs2, "printed.yaml", out.Bytes()); err != nil {
		t.Fatalf("printed config does not read back: %v\n%s", err, out.String())
	}
	if c2.VNI != 7 || c2.ClusterCIDR != "10.50.0.0/16" || len(c2.Join) != 2 {
		t.Fatalf("round trip: %+v", c2)
	}
}

func TestConfigFileIsStrict(t *testing.T) {
	cases := map[string]string{
		"unknown key":     "cluster-cidr: 10.1.0.0/16\nclustr-cidr: 10.2.0.0/16\n",
		"wrong type":      "vni: banana\n",
		"map value":       "vni:\n  a: 1\n",
		"list for scalar": "vni: [1, 2]\n",
		"duplicate":       "vni: 1\nvni: 2\n",
		"not a map":       "- vni\n",
		"config in file":  "config: other.yaml\n",
		"bad yaml":        "vni: [\n",
		"two documents":   "vni: 5\n---\nvni: 7\n",
		"bad second":      "vni: 5\n---\nvni: [\n",
	}
	for name, yml := range cases {
		fs, _ := testFlags()
		err := applyConfigYAML(fs, "loom.yaml", []byte(yml))
		if err == nil || !strings.Contains(err.Error(), "loom.yaml") {
			t.Errorf("%s: err = %v, want an error naming the file", name, err)
		}
	}
	for _, yml := range []string{"", "# nothing set\n", "---\n", "---\nvni: 5\n---\n", "---\n---\nvni: 5\n"} {
		fs, c := testFlags()
		if err := applyConfigYAML(fs, "loom.yaml", []byte(yml)); err != nil || strings.Contains(yml, "vni") && c.VNI != 5 {
			t.Errorf("%q: err = %v, vni %d; want it read as one document", yml, err, c.VNI)
		}
	}
	fs, _ := testFlags()
	err := applyConfigYAML(fs, "loom.yaml", []byte("vni: 1\nclustr-cidr: x\n"))
	if err == nil || !strings.Contains(err.Error(), "loom.yaml:2") || !strings.Contains(err.Error(), "clustr-cidr") {
		t.Fatalf("err = %v, want it to name line 2 and the key", err)
	}
	fs, c := testFlags()
	err = applyConfigYAML(fs, "loom.yaml", []byte("vni: 5\n---\nvni: 7\n"))
	if err == nil || !strings.Contains(err.Error(), "loom.yaml:3: a second YAML document") {
		t.Fatalf("err = %v, want it to name line 3 and the second document", err)
	}
	if c.VNI != DefaultConfig().VNI {
		t.Fatalf("vni = %d after a refused file, want the default: a refused file sets nothing", c.VNI)
	}
}

// FuzzConfigFile feeds loomd's --config reader arbitrary files: it must
// answer with an error naming the file or apply the file, never panic, and
// what --print-config then prints must read back to the same configuration.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"cluster-cidr: 10.50.0.0/16\nvni: 3\njoin: [10.0.0.1, 10.0.0.2:7946]\ndead-node-grace: 5s\ninsecure-gossip: true\n",
		"join:\n  - a\n  - 'b,c'\n",
		"vni: 0x10\n",
		"cluster-cidr: \"\"\n",
		"join: []\n",
		"vni: [\n",
		"- vni\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs, _ := testFlags()
		if err := applyConfigYAML(fs, "fuzz.yaml", data); err != nil {
			var fe *FlagError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q is not a FlagError naming the file", err)
			}
			return
		}
		var printed bytes.Buffer
		if err := PrintConfig(&printed, fs); err != nil {
			t.Fatalf("print a config the file set: %v", err)
		}
		fs2, _ := testFlags()
		if err := applyConfigYAML(fs2, "printed.yaml", printed.Bytes()); err != nil {
			t.Fatalf("printed config does not read back: %v\n%s", err, printed.String())
		}
		var again bytes.Buffer
		if err := PrintConfig(&again, fs2); err != nil {
			t.Fatal(err)
		}
		if again.String() != printed.String() {
			t.Fatalf("config changed reading back its print:\n%s\nbecame\n%s", printed.String(), again.String())
		}
	})
}
