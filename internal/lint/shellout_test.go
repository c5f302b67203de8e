package lint

import (
	"go/ast"
	"go/token"
	"testing"
)

// harnesses are the test rig and the benchmarks: they build and inspect
// namespaces with ip, nft and iperf3, as an operator would.
var harnesses = []string{"integration/", "bench/"}

// toolExecs reports each exec.Command or exec.CommandContext outside the
// harnesses whose program is a string literal. Every kernel change Loom
// makes goes through netlink or nftables' library, never through ip, nft,
// iptables or sysctl; the only programs Loom starts are its own helpers,
// whose paths come from configuration.
func toolExecs(f goFile) []string {
	if under(f.path, harnesses...) {
		return nil
	}
	return calls(f, "os/exec", func(fn string, call *ast.CallExpr) bool {
		prog := 0
		switch fn {
		case "Command":
		case "CommandContext":
			prog = 1
		default:
			return false
		}
		if len(call.Args) <= prog {
			return false
		}
		lit, ok := call.Args[prog].(*ast.BasicLit)
		return ok && lit.Kind == token.STRING
	})
}

func TestNoShellingOutToTools(t *testing.T) {
	checkModule(t, toolExecs, "product code runs no system tools (ip, nft, sysctl, ...): use netlink, nftables or x/sys")
}

func TestToolExecsFindsLiteralPrograms(t *testing.T) {
	const src = `package x
import ("context"; "os/exec")
func f(helper string) {
	exec.Command("ip", "link")
	exec.CommandContext(context.Background(), "nft", "-f", "-")
	exec.Command(helper, "--serve")
	exec.LookPath("ip")
}`
	wantFindings(t, toolExecs, mustParse(t, "overlay/x.go", src), "exec.Command", "exec.CommandContext")
	wantFindings(t, toolExecs, mustParse(t, "integration/rig/x.go", src))
}
