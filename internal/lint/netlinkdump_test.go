package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const netlinkPkg = "github.com/vishvananda/netlink"

// handleOwners may open their own netlink handles: overlay's kernel, whose
// dumps all go through retryDump, and the benchmarks' hand-made baselines.
var handleOwners = []string{"overlay/kernel_netlink.go", "bench/"}

// rawNetlinkDumps reports each place in src that calls a dump of the
// netlink package directly, or opens a handle outside handleOwners. Since
// netlink v1.2.1 a dump that a concurrent change interrupts fails with
// ErrDumpInterrupted; on a node whose links and addresses change all the
// time (pods coming and going) an unretried dump fails at random. Loom lists
// through overlay.Kernel (loomd) or plugins/pkg/netlinksafe (the plugin),
// which retry.
func rawNetlinkDumps(path string, src []byte) ([]string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	name := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == netlinkPkg {
			name = "netlink"
			if imp.Name != nil {
				name = imp.Name.Name
			}
		}
	}
	if name == "" || name == "_" {
		return nil, nil
	}
	mayOwnHandle := false
	for _, owner := range handleOwners {
		if path == owner || strings.HasSuffix(owner, "/") && strings.HasPrefix(path, owner) {
			mayOwnHandle = true
		}
	}
	var found []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != name {
			return true
		}
		fn := sel.Sel.Name
		// LinkByName falls back to a dump of all links on kernels without
		// IFLA_IFNAME lookups, which is why netlinksafe wraps it too.
		isDump := strings.Contains(fn, "List") || fn == "LinkByName"
		isHandle := strings.HasPrefix(fn, "NewHandle")
		if isDump || isHandle && !mayOwnHandle {
			found = append(found, fset.Position(call.Pos()).String()+": "+name+"."+fn)
		}
		return true
	})
	return found, nil
}

func TestNoUnretriedNetlinkDumps(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		// Tests inspect namespaces they own, where nothing else changes.
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found, err := rawNetlinkDumps(filepath.ToSlash(rel), src)
		if err != nil {
			return err
		}
		checked++
		for _, f := range found {
			t.Errorf("%s: dump or handle without retry on ErrDumpInterrupted; list through overlay.Kernel (loomd) or plugins/pkg/netlinksafe (the plugin)", f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d Go files under %s; is the walk looking at the module?", checked, root)
	}
}

func TestRawNetlinkDumpsFindsEachKind(t *testing.T) {
	src := `package x
import nl "github.com/vishvananda/netlink"
func f() {
	nl.RouteListFiltered(2, nil, 0)
	nl.AddrList(nil, 2)
	nl.LinkByName("eth0")
	nl.NewHandleAt(0)
	nl.LinkSetUp(nil)
}`
	found, err := rawNetlinkDumps("agent/x.go", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nl.RouteListFiltered", "nl.AddrList", "nl.LinkByName", "nl.NewHandleAt"}
	if len(found) != len(want) {
		t.Fatalf("found %q, want %q", found, want)
	}
	for i := range want {
		if !strings.HasSuffix(found[i], want[i]) {
			t.Errorf("finding %d is %q, want %s", i, found[i], want[i])
		}
	}
	if found, _ := rawNetlinkDumps("overlay/kernel_netlink.go", []byte(src)); len(found) != 3 {
		t.Errorf("kernel_netlink.go may open handles: found %q", found)
	}
}
