package cab

import (
	"bytes"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// goFiles returns every .go file of the module, keyed by package directory.
func goFiles(t *testing.T) map[string][]string {
	t.Helper()
	dirs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 5 {
		t.Fatalf("found only %d package directories; is the test running at the module root?", len(dirs))
	}
	return dirs
}

func TestGofmt(t *testing.T) {
	for _, files := range goFiles(t) {
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := format.Source(src)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if !bytes.Equal(src, out) {
				t.Errorf("%s is not gofmt-ed: run gofmt -w %s", f, f)
			}
		}
	}
}

func TestPackageDocs(t *testing.T) {
	for dir, files := range goFiles(t) {
		documented := false
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") && dir != "test" {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				documented = true
			}
		}
		if !documented {
			t.Errorf("package in %s has no doc comment: add a // Package ... comment above its package clause", dir)
		}
	}
}

// TestImportDirection keeps DESIGN.md's layering: cmd/cab → control →
// cab → {allow, crypto, bridgeif, transport/...}; allow → crypto;
// transport/* → transport; crypto, bridgeif and transport never import
// each other or the root. The small packages under internal/ are leaves:
// anyone may import them, and they import nothing of cab's.
func TestImportDirection(t *testing.T) {
	layer := func(pkg string) string {
		switch {
		case pkg == "cab":
			return "root"
		case pkg == "cab/crypto" || strings.HasPrefix(pkg, "cab/crypto/"):
			return "crypto"
		case pkg == "cab/bridgeif" || strings.HasPrefix(pkg, "cab/bridgeif/"):
			return "bridgeif"
		case pkg == "cab/transport" || strings.HasPrefix(pkg, "cab/transport/"):
			return "transport"
		case pkg == "cab/allow":
			return "allow" // a leaf beside crypto, which it uses
		case pkg == "cab/control":
			return "app" // above the root, below the command
		case strings.HasPrefix(pkg, "cab/cmd/"):
			return "cmd"
		case pkg == "cab/test" || strings.HasPrefix(pkg, "cab/test/"):
			return "test"
		case strings.HasPrefix(pkg, "cab/internal/"):
			return "internal"
		}
		return ""
	}
	checked := 0
	for dir, files := range goFiles(t) {
		pkg := "cab"
		if dir != "." {
			pkg = "cab/" + filepath.ToSlash(dir)
		}
		from := layer(pkg)
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if path != "cab" && !strings.HasPrefix(path, "cab/") {
					continue
				}
				checked++
				to := layer(path)
				var ok bool
				switch from {
				case "cmd", "test":
					ok = to != "cmd" && to != "test"
				case "app":
					ok = to != "cmd" && to != "test" && to != "app"
				case "root":
					ok = to == "crypto" || to == "bridgeif" || to == "transport" || to == "allow" || to == "internal" || (to == "root" && strings.HasSuffix(f, "_test.go"))
				case "allow":
					ok = to == "crypto" || to == "allow" || to == "internal"
				case "crypto", "bridgeif", "transport":
					ok = to == from || to == "internal"
				case "internal":
					ok = false // a leaf
				}
				if !ok {
					t.Errorf("%s imports %s: the layering is cmd/cab → control → cab → {allow, crypto, bridgeif, transport/...} → internal/...", f, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no internal imports found; the check checked nothing")
	}
}

// TestCapabilityGuards keeps the promise of transport/capabilities.go: a
// carrier type with the methods of a capability says so with a
// `var _ transport.Capability = (*T)(nil)` guard, so that a renamed or
// retyped method fails to compile instead of silently losing the
// capability.
func TestCapabilityGuards(t *testing.T) {
	capOf := map[string]string{
		"Scheme": "Schemer", "PathMTU": "PathMTUer", "ProbesPathMTU": "SelfProber",
		"RTT": "RTTer", "DropCounts": "DropCounter", "PathStats": "PathStatser",
		"Authenticated": "Authenticator", "CheckReach": "ReachChecker",
	}
	checked := 0
	for dir, files := range goFiles(t) {
		if !strings.HasPrefix(dir, "transport"+string(filepath.Separator)) || strings.HasSuffix(dir, "transporttest") {
			continue
		}
		methods := map[string][]string{} // type → capability methods (incl. promoted from an embedded base)
		guards := map[string]bool{}      // "Type Capability"
		embeds := map[string][]string{}  // type → embedded types
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range af.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if d.Recv == nil || capOf[d.Name.Name] == "" {
						continue
					}
					rt := d.Recv.List[0].Type
					if s, ok := rt.(*ast.StarExpr); ok {
						rt = s.X
					}
					if id, ok := rt.(*ast.Ident); ok {
						methods[id.Name] = append(methods[id.Name], d.Name.Name)
					}
				case *ast.GenDecl:
					for _, sp := range d.Specs {
						switch sp := sp.(type) {
						case *ast.ValueSpec:
							sel, ok := sp.Type.(*ast.SelectorExpr)
							if !ok || len(sp.Values) != 1 {
								continue
							}
							if ce, ok := sp.Values[0].(*ast.CallExpr); ok {
								if pe, ok := ce.Fun.(*ast.ParenExpr); ok {
									if st, ok := pe.X.(*ast.StarExpr); ok {
										if id, ok := st.X.(*ast.Ident); ok {
											guards[id.Name+" "+sel.Sel.Name] = true
										}
									}
								}
							}
						case *ast.TypeSpec:
							if st, ok := sp.Type.(*ast.StructType); ok {
								for _, fl := range st.Fields.List {
									if len(fl.Names) == 0 {
										if id, ok := fl.Type.(*ast.Ident); ok {
											embeds[sp.Name.Name] = append(embeds[sp.Name.Name], id.Name)
										}
									}
								}
							}
						}
					}
				}
			}
		}
		for typ := range guards {
			typ = strings.Fields(typ)[0]
			all := append([]string(nil), methods[typ]...)
			for _, e := range embeds[typ] {
				all = append(all, methods[e]...)
			}
			for _, m := range all {
				checked++
				if !guards[typ+" "+capOf[m]] {
					t.Errorf("%s: %s has %s but no `var _ transport.%s = (*%s)(nil)` guard", dir, typ, m, capOf[m], typ)
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d capability methods; is the test finding the carriers?", checked)
	}
}

// systemSuffixes are the file name endings that tie a file to systems.
var systemSuffixes = []string{"_linux.go", "_freebsd.go", "_darwin.go", "_windows.go"}

// systemBound reports whether the Go file f, read as src, builds on some
// systems only: a GOOS file name suffix or a //go:build line.
func systemBound(f string, src []byte) bool {
	base := f
	if t, ok := strings.CutSuffix(f, "_test.go"); ok {
		base = t + ".go"
	}
	for _, s := range systemSuffixes {
		if strings.HasSuffix(base, s) {
			return true
		}
	}
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "package ") {
			break
		}
		if strings.HasPrefix(line, "//go:build ") {
			return true
		}
	}
	return false
}

// TestSystemCodeInSystemFiles keeps DESIGN.md's portability rule: code
// that speaks to one system's kernel (x/sys/unix, x/sys/windows, netlink,
// songgao/water) lives in files built for some systems only, and every
// such file says in a "Verified:" comment what was checked and how (run on
// Linux by which tests, or compiled by make cross).
func TestSystemCodeInSystemFiles(t *testing.T) {
	systemImports := []string{"golang.org/x/sys/unix", "golang.org/x/sys/windows", "github.com/vishvananda/netlink", "github.com/songgao/water"}
	bound := 0
	for dir, files := range goFiles(t) {
		if dir == "test" || strings.HasPrefix(dir, "test"+string(filepath.Separator)) {
			continue // Linux's alone: TestIntegrationTestsAreLinux
		}
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			isBound := systemBound(f, src)
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			if isBound {
				bound++
				if !strings.Contains(string(src), "\n// Verified: ") {
					t.Errorf("%s builds on some systems only and does not say what was verified: add a comment \"// Verified: run on Linux by TestX\" or \"// Verified: compiled for freebsd/amd64 by make cross; not run\"", f)
				}
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				for _, s := range systemImports {
					if path == s {
						t.Errorf("%s (in %s) imports %s but builds on every system: move that code to a _linux.go file (or one with a //go:build line) behind the package's own functions", f, dir, path)
					}
				}
			}
		}
	}
	if bound < 10 {
		t.Fatalf("found only %d system files; the check checked little", bound)
	}
}

// TestIntegrationTestsAreLinux: the integration tests and their tools use
// network namespaces, so every file under test/ is built on Linux alone,
// and make cross can vet the module for the other systems.
func TestIntegrationTestsAreLinux(t *testing.T) {
	var files []string
	for dir, fs := range goFiles(t) {
		if dir == "test" || strings.HasPrefix(dir, "test"+string(filepath.Separator)) {
			files = append(files, fs...)
		}
	}
	if len(files) == 0 {
		t.Fatal("no files under test/")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(src), "//go:build linux\n") {
			t.Errorf("%s: begin it with //go:build linux (the integration tests need Linux's network namespaces; make cross vets the module for other systems)", f)
		}
	}
}

// TestREADMECrossTargets: the README's "Other systems" names exactly the
// systems make cross builds for.
func TestREADMECrossTargets(t *testing.T) {
	mk, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var cross []string
	for _, line := range strings.Split(string(mk), "\n") {
		if v, ok := strings.CutPrefix(line, "CROSS"); ok {
			if _, list, ok := strings.Cut(v, ":="); ok {
				cross = strings.Fields(list)
			}
		}
	}
	if len(cross) < 8 {
		t.Fatalf("Makefile: CROSS lists %d targets, want the 8 of linux, freebsd, darwin and windows on amd64 and arm64", len(cross))
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "## Other systems")
	if !ok {
		t.Fatal(`README.md has no "## Other systems" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	para, _, _ := strings.Cut(sec, "\n\n| ")
	said := map[string]bool{}
	for _, w := range strings.Fields(strings.NewReplacer(",", " ", "`", " ").Replace(para)) {
		if strings.Count(w, "/") == 1 && (strings.HasSuffix(w, "/amd64") || strings.HasSuffix(w, "/arm64")) {
			said[w] = true
		}
	}
	for _, c := range cross {
		if !said[c] {
			t.Errorf("README.md: Other systems does not say make cross builds for %s", c)
		}
		delete(said, c)
	}
	for w := range said {
		t.Errorf("README.md: Other systems says cab builds for %s, which make cross does not build", w)
	}
}
