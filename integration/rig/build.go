package rig

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Binaries are the programs a rig runs.
var Binaries = []string{"loomd", "loom", "loomctl", "loom-kube-policy"}

// RaceEnv names the environment variable that, set to 1, makes Build
// compile Loom's binaries with the race detector (`make test-race`): the
// agent's concurrency (gossip callbacks, reconciler, API, watchers) then
// runs under the detector in every integration test, and a detected race
// shows in the agent's log as RaceReport.
const RaceEnv = "LOOM_RACE"

// RaceReport is the line a race-detector build writes on each detected race.
const RaceReport = "WARNING: DATA RACE"

// Build compiles the real binaries from the module at moduleRoot into out.
func Build(moduleRoot, out string) error {
	var pkgs []string
	for _, b := range Binaries {
		pkgs = append(pkgs, "./cmd/"+b)
	}
	return goBuild(moduleRoot, out, pkgs, os.Getenv(RaceEnv) == "1")
}

// goBuild builds the main packages pkgs into the directory out, each named
// after its package's last path element, in one go command so that their
// packages compile in parallel and once. Static (no cgo) and -trimpath, as
// `make build`, Loom's images and the plugins' release builds are: a
// dynamically linked plugin spends about 1.5 ms more starting (the loader),
// which the CNI bench would count, and the same flags as `make build` let
// `make test` find every package already compiled. With race the binaries
// carry the race detector, which needs cgo.
func goBuild(moduleRoot, out string, pkgs []string, race bool) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// A trailing slash makes -o a directory even for one package.
	args, cgo := []string{"build", "-trimpath"}, "CGO_ENABLED=0"
	if race {
		args, cgo = append(args, "-race"), "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(append(args, "-o", out+"/"), pkgs...)...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), cgo)
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
	return goBuild(moduleRoot, out, ReferencePlugins, false)
}

// RaceReports returns the race detector's reports in the log at path, the
// first few dozen lines of them, or "" when there are none.
func RaceReports(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := bytes.Index(b, []byte(RaceReport))
	if i < 0 {
		return ""
	}
	lines := strings.SplitN(string(b[i:]), "\n", 61)
	return strings.Join(lines[:min(len(lines), 60)], "\n")
}
