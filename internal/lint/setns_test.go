package lint

import (
	"go/ast"
	"testing"
)

// threadSwitchers may move a thread into another network namespace: the
// plugin (through plugins/pkg/ns, on a thread it locks), podctl (the compose
// rig's stand-in runtime, likewise) and the harnesses.
var threadSwitchers = []string{"cniplugin/", "deploy/compose/podctl/", "integration/", "bench/"}

// namespaceSwitches reports each setns outside threadSwitchers. loomd runs
// goroutines on shared threads: a thread left in another namespace takes
// whatever runs on it next there. loomd reaches other namespaces through
// handles opened in them (netlink.NewHandleAt), never by switching.
func namespaceSwitches(f goFile) []string {
	if under(f.path, threadSwitchers...) {
		return nil
	}
	setns := func(fn string, _ *ast.CallExpr) bool { return fn == "Set" || fn == "Setns" }
	found := calls(f, "github.com/vishvananda/netns", setns)
	return append(found, calls(f, "golang.org/x/sys/unix", setns)...)
}

func TestNoNamespaceSwitchesInTheAgent(t *testing.T) {
	checkModule(t, namespaceSwitches, "loomd never switches a thread's namespace; open a handle in it (netlink.NewHandleAt)")
}

func TestNamespaceSwitchesFindsSetns(t *testing.T) {
	const src = `package x
import ("github.com/vishvananda/netns"; "golang.org/x/sys/unix")
func f(h netns.NsHandle) {
	netns.Set(h)
	unix.Setns(int(h), unix.CLONE_NEWNET)
	netns.GetFromPath("/run/netns/x")
}`
	wantFindings(t, namespaceSwitches, mustParse(t, "overlay/x.go", src), "netns.Set", "unix.Setns")
	wantFindings(t, namespaceSwitches, mustParse(t, "cniplugin/x.go", src))
}
