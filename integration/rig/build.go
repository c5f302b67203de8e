package rig

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// Binaries are the programs a rig runs.
var Binaries = []string{"loomd", "loom", "loomctl", "loom-kube-policy"}

// Build compiles the real binaries from the module at moduleRoot into out.
func Build(moduleRoot, out string) error {
	for _, b := range Binaries {
		cmd := exec.Command("go", "build", "-o", filepath.Join(out, b), "./cmd/"+b)
		cmd.Dir = moduleRoot
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", b, err, o)
		}
	}
	return nil
}

// ReferencePlugins are the containernetworking/plugins binaries the tests
// and benchmarks use, at the version pinned in go.mod (as go tools).
var ReferencePlugins = map[string]string{
	"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
	"bandwidth":  "github.com/containernetworking/plugins/plugins/meta/bandwidth",
	"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
}

// BuildReferencePlugins compiles the reference plugins into out.
func BuildReferencePlugins(moduleRoot, out string) error {
	for name, pkg := range ReferencePlugins {
		cmd := exec.Command("go", "build", "-o", filepath.Join(out, name), pkg)
		cmd.Dir = moduleRoot
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", name, err, o)
		}
	}
	return nil
}
