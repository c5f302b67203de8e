package rig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries are the programs a rig runs.
var Binaries = []string{"loomd", "loom", "loomctl", "loom-kube-policy"}

// Build compiles the real binaries from the module at moduleRoot into out.
func Build(moduleRoot, out string) error {
	for _, b := range Binaries {
		if err := goBuild(moduleRoot, filepath.Join(out, b), "./cmd/"+b); err != nil {
			return err
		}
	}
	return nil
}

// goBuild builds pkg statically (no cgo), as `make build`, Loom's images
// and the plugins' release builds do: a dynamically linked plugin spends
// about 1.5 ms more starting (the loader), which the CNI bench would count.
func goBuild(moduleRoot, out, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w: %s", pkg, err, o)
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
		if err := goBuild(moduleRoot, filepath.Join(out, name), pkg); err != nil {
			return err
		}
	}
	return nil
}
