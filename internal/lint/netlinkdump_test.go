package lint

import (
	"go/ast"
	"strings"
	"testing"
)

// handleOwners may open their own netlink handles: overlay's kernel, whose
// dumps all go through retryDump, and the benchmarks' hand-made baselines.
var handleOwners = []string{"overlay/kernel_netlink.go", "bench/"}

// rawNetlinkDumps reports each call of a netlink dump made directly, and
// each netlink handle opened outside handleOwners. Since netlink v1.2.1 a
// dump that a concurrent change interrupts fails with ErrDumpInterrupted;
// on a node whose links and addresses change all the time (pods coming and
// going) an unretried dump fails at random. Loom lists through
// overlay.Kernel (loomd) or plugins/pkg/netlinksafe (the plugin), which
// retry.
func rawNetlinkDumps(f goFile) []string {
	mayOwnHandle := under(f.path, handleOwners...)
	return calls(f, "github.com/vishvananda/netlink", func(fn string, _ *ast.CallExpr) bool {
		// LinkByName falls back to a dump of all links on kernels without
		// IFLA_IFNAME lookups, which is why netlinksafe wraps it too.
		isDump := strings.Contains(fn, "List") || fn == "LinkByName"
		isHandle := strings.HasPrefix(fn, "NewHandle")
		return isDump || isHandle && !mayOwnHandle
	})
}

func TestNoUnretriedNetlinkDumps(t *testing.T) {
	checkModule(t, rawNetlinkDumps, "dump or handle without retry on ErrDumpInterrupted; list through overlay.Kernel (loomd) or plugins/pkg/netlinksafe (the plugin)")
}

func TestRawNetlinkDumpsFindsEachKind(t *testing.T) {
	const src = `package x
import nl "github.com/vishvananda/netlink"
func f() {
	nl.RouteListFiltered(2, nil, 0)
	nl.AddrList(nil, 2)
	nl.LinkByName("eth0")
	nl.NewHandleAt(0)
	nl.LinkSetUp(nil)
}`
	wantFindings(t, rawNetlinkDumps, mustParse(t, "agent/x.go", src), "nl.RouteListFiltered", "nl.AddrList", "nl.LinkByName", "nl.NewHandleAt")
	wantFindings(t, rawNetlinkDumps, mustParse(t, "overlay/kernel_netlink.go", src), "nl.RouteListFiltered", "nl.AddrList", "nl.LinkByName")
}
