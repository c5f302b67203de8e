package rig

import (
	"fmt"
	"os"
	"os/exec"
)

// Binaries are the programs a rig runs.
var Binaries = []string{"loomd", "loom", "loomctl", "loom-kube-policy"}

// Build compiles the real binaries from the module at moduleRoot into out.
func Build(moduleRoot, out string) error {
	var pkgs []string
	for _, b := range Binaries {
		pkgs = append(pkgs, "./cmd/"+b)
	}
	return goBuild(moduleRoot, out, pkgs)
}

// goBuild builds the main packages pkgs into the directory out, each named
// after its package's last path element, in one go command so that their
// packages compile in parallel and once. Static (no cgo) and -trimpath, as
// `make build`, Loom's images and the plugins' release builds are: a
// dynamically linked plugin spends about 1.5 ms more starting (the loader),
// which the CNI bench would count, and the same flags as `make build` let
// `make test` find every package already compiled.
func goBuild(moduleRoot, out string, pkgs []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// A trailing slash makes -o a directory even for one package.
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", out + "/"}, pkgs...)...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %v: %w: %s", pkgs, err, o)
	}
	return nil
}

// ReferencePlugins are the containernetworking/plugins binaries the tests
// and benchmarks use, at the version pinned in go.mod (as go tools); each
// is built as its package's last path element (bridge, host-local, ...).
var ReferencePlugins = []string{
	"github.com/containernetworking/plugins/plugins/meta/portmap",
	"github.com/containernetworking/plugins/plugins/meta/bandwidth",
	"github.com/containernetworking/plugins/plugins/main/bridge",
	"github.com/containernetworking/plugins/plugins/ipam/host-local",
}

// BuildReferencePlugins compiles the reference plugins into out.
func BuildReferencePlugins(moduleRoot, out string) error {
	return goBuild(moduleRoot, out, ReferencePlugins)
}
