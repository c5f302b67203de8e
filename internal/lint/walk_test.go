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

// goFile is one parsed non-test Go file of the module.
type goFile struct {
	path string // slash-separated, relative to the module root
	fset *token.FileSet
	ast  *ast.File
}

// rule reports each place in a file that breaks it, as "file:line:col: what".
type rule func(f goFile) []string

func parseGoFile(path string, src []byte) (goFile, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	return goFile{path: path, fset: fset, ast: f}, err
}

// moduleFiles parses every non-test Go file of the module. Tests are left
// out: they inspect namespaces they own and may use any tool to do it.
func moduleFiles(t *testing.T) []goFile {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var files []goFile
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
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := parseGoFile(filepath.ToSlash(rel), src)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 50 {
		t.Fatalf("found only %d Go files under %s; is the walk looking at the module?", len(files), root)
	}
	return files
}

// checkModule fails t for every place in the module that breaks r.
func checkModule(t *testing.T, r rule, advice string) {
	t.Helper()
	for _, f := range moduleFiles(t) {
		for _, found := range r(f) {
			t.Errorf("%s: %s", found, advice)
		}
	}
}

// importName is the name file f uses for the package at importPath, or ""
// where it does not import it.
func importName(f *ast.File, importPath string) string {
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == importPath {
			if imp.Name != nil {
				return imp.Name.Name
			}
			return importPath[strings.LastIndex(importPath, "/")+1:]
		}
	}
	return ""
}

// calls reports each call of pkg.Fn in f (pkg being the name f imports
// importPath as) for which match returns true.
func calls(f goFile, importPath string, match func(fn string, call *ast.CallExpr) bool) []string {
	name := importName(f.ast, importPath)
	if name == "" || name == "_" || name == "." {
		return nil
	}
	var found []string
	ast.Inspect(f.ast, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == name && match(sel.Sel.Name, call) {
			found = append(found, f.fset.Position(call.Pos()).String()+": "+name+"."+sel.Sel.Name)
		}
		return true
	})
	return found
}

// under reports whether path is one of prefixes or lies below one ending in "/".
func under(path string, prefixes ...string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// mustParse parses src for the rules' self-tests.
func mustParse(t *testing.T, path, src string) goFile {
	t.Helper()
	f, err := parseGoFile(path, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// wantFindings checks that r finds exactly the calls named in want, in order.
func wantFindings(t *testing.T, r rule, f goFile, want ...string) {
	t.Helper()
	found := r(f)
	if len(found) != len(want) {
		t.Fatalf("%s: found %q, want %q", f.path, found, want)
	}
	for i := range want {
		if !strings.HasSuffix(found[i], want[i]) {
			t.Errorf("%s: finding %d is %q, want %s", f.path, i, found[i], want[i])
		}
	}
}
