package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
	"github.com/google/go-cmp/cmp"
)

// readDumpAsset reads an upstream asset (gunzipped if need be).
func readDumpAsset(t testing.TB, path string) []byte {
	t.Helper()
	data, err := conformance.ReadMaybeGzip(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// passingDumpAssets lists every dump asset that must parse.
func passingDumpAssets(t testing.TB) []string {
	t.Helper()
	var out []string
	dir := conformance.Dir(t)
	for _, pat := range []string{"*.dump", "*.dump.gz"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			if !strings.HasPrefix(filepath.Base(p), "should-fail-") {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no dump assets in %s", dir)
	}
	return out
}

// dumpNodeRecord is one node of a flattened tree, for comparison with go-cmp
// (which is far too slow on deep pointer trees): Parent and Children are
// dropped, LinkTo becomes the target's path, and a hard link entry keeps
// only its name, because the printer writes the target's mode on link
// lines.
type dumpNodeRecord struct {
	Path     string
	Node     Node
	LinkTo   string
	Children int
}

func flattenTree(root *Node) []dumpNodeRecord {
	var out []dumpNodeRecord
	var walk func(n *Node, path string)
	walk = func(n *Node, path string) {
		r := dumpNodeRecord{Path: path, Node: *n, Children: len(n.Children)}
		r.Node.Parent, r.Node.Children, r.Node.LinkTo = nil, nil, nil
		if n.LinkTo != nil {
			r.Node = Node{Name: n.Name}
			r.LinkTo = n.LinkTo.Path()
		}
		out = append(out, r)
		for _, c := range n.Children {
			walk(c, strings.TrimSuffix(path, "/")+"/"+c.Name)
		}
	}
	walk(root, "/")
	return out
}

// diffDumpTrees returns "" if the trees are equal, else a go-cmp diff.
func diffDumpTrees(a, b *Node) string {
	fa, fb := flattenTree(a), flattenTree(b)
	if reflect.DeepEqual(fa, fb) { // quick path: cmp takes seconds on big trees
		return ""
	}
	return cmp.Diff(fa, fb)
}

func mustParseDump(t testing.TB, text string, strict bool) *Node {
	t.Helper()
	root, err := ParseDump(strings.NewReader(text), DumpOptions{Strict: strict})
	if err != nil {
		t.Fatalf("parse: %v\ninput:\n%s", err, text)
	}
	return root
}

func dumpToString(t testing.TB, root *Node, opts DumpPrintOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteDump(&b, root, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkDumpTree verifies the tree model's invariants on a parsed tree.
func checkDumpTree(t testing.TB, root *Node) int {
	t.Helper()
	count := 0
	var walk func(n *Node)
	walk = func(n *Node) {
		count++
		if n.LinkTo != nil {
			if n.LinkTo.LinkTo != nil || n.LinkTo.IsDir() || len(n.Children) > 0 {
				t.Fatalf("%s: bad hard link", n.Path())
			}
			return
		}
		for i, c := range n.Children {
			if c.Parent != n {
				t.Fatalf("%s: wrong parent", c.Path())
			}
			if i > 0 && n.Children[i-1].Name >= c.Name {
				t.Fatalf("%s: children not sorted", n.Path())
			}
			walk(c)
		}
	}
	walk(root)
	return count
}

// dumpRoundTrip prints root, parses the text again and checks that the trees
// are equal and that printing is idempotent. It returns the printed text.
func dumpRoundTrip(t testing.TB, root *Node) string {
	t.Helper()
	text := dumpToString(t, root, DumpPrintOptions{})
	again, err := ParseDump(strings.NewReader(text), DumpOptions{Strict: true})
	if err != nil {
		t.Fatalf("printed dump does not parse: %v", err)
	}
	if diff := diffDumpTrees(root, again); diff != "" {
		t.Fatalf("tree changed by print+parse (-before +after):\n%s", diff)
	}
	if text2 := dumpToString(t, again, DumpPrintOptions{}); text2 != text {
		t.Fatalf("printing is not idempotent:\n%s\n---\n%s", text, text2)
	}
	return text
}

func TestParseDumpAssets(t *testing.T) {
	for _, path := range passingDumpAssets(t) {
		name := strings.TrimSuffix(filepath.Base(path), ".gz")
		t.Run(name, func(t *testing.T) {
			data := readDumpAsset(t, path)
			lax := !conformance.Strict(name)
			root, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: !lax})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if n, lines := checkDumpTree(t, root), bytes.Count(data, []byte("\n")); n != lines && n != lines+1 {
				t.Errorf("%d nodes from %d lines", n, lines)
			}
			dumpRoundTrip(t, root)
			if lax && name != "honggfuzz-longlink-unterminated.dump" {
				if _, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: true}); err == nil {
					t.Errorf("strict parse accepted %s", name)
				}
			}
		})
	}
}

// TestParseDumpAssetText checks that the printer reproduces upstream's
// own output (composefs-info dump) for assets already in that form.
func TestParseDumpAssetText(t *testing.T) {
	for _, name := range []string{"special.dump", "bigfile-xattr.dump", "honggfuzz-bigfile-with-acl.dump"} {
		data := readDumpAsset(t, filepath.Join(conformance.Dir(t), name))
		root := mustParseDump(t, string(data), true)
		if got := dumpToString(t, root, DumpPrintOptions{}); got != string(data) {
			t.Errorf("%s: printed text differs:\n%s", name, got)
		}
	}
}

func TestParseDumpShouldFail(t *testing.T) {
	want := map[string]struct {
		line int
		word string
	}{
		"should-fail-big-inline.dump":           {2, "inline content of 5004 bytes exceeds the maximum of 5000"},
		"should-fail-dir-hardlink.dump":         {2, "directories cannot be hardlinked"},
		"should-fail-dot-name.dump":             {2, `"." or ".."`},
		"should-fail-dotdot-name.dump":          {2, `"." or ".."`},
		"should-fail-empty-link-name.dump":      {2, "symlink without a target"},
		"should-fail-empty-name.dump":           {2, "empty path component"},
		"should-fail-empty-xattr-key.dump":      {2, "empty xattr key"},
		"should-fail-honggfuzz-long-xattr.dump": {1, "xattrs too large"},
		"should-fail-long-link.dump":            {2, "symlink target longer than 4095 bytes"},
		"should-fail-long-xattr-key.dump":       {2, "xattr key longer than 255 bytes"},
		// Its MODE, 644, has no file type; upstream refuses it for
		// that before looking at the xattr (TestParseDumpErrors checks
		// the value with a proper mode).
		"should-fail-long-xattr-value.dump": {2, "MODE 644 has no valid file type"},
		"should-fail-no-ftype.dump":         {2, "MODE 0 has no valid file type"},
		"should-fail-self-hardlink.dump":    {2, "hardlink to itself"},
		"should-fail-too-big.dump":          {2, "file too big"},
	}
	paths, _ := filepath.Glob(filepath.Join(conformance.Dir(t), "should-fail-*.dump"))
	if len(paths) == 0 {
		t.Fatal("no should-fail assets")
	}
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("new should-fail asset %s: add its expected error here", name)
			}
			data := readDumpAsset(t, path)
			for _, strict := range []bool{false, true} {
				_, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: strict})
				var de *DumpError
				if !errors.As(err, &de) {
					t.Fatalf("strict=%v: got %v, want a *DumpError", strict, err)
				}
				if de.Line != w.line {
					t.Errorf("strict=%v: line %d, want %d: %v", strict, de.Line, w.line, err)
				}
				word := w.word
				if strict && !bytes.HasSuffix(data, []byte("\n")) {
					word = "missing newline at end of file"
				}
				msg := err.Error()
				if !strings.Contains(msg, word) || !strings.HasPrefix(msg, "line ") {
					t.Errorf("strict=%v: error %q does not say %q", strict, msg, word)
				}
			}
		})
	}
}

const dumpRootLine = "/ 4096 40755 2 0 0 0 0.0 - - -\n"

func TestParseDumpErrors(t *testing.T) {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	tests := []struct {
		name, text string
		strict     bool
		line       int
		want       string
	}{
		{"empty input", "", false, 0, "no files in dump"},
		{"empty line", dumpRootLine + "\n", false, 2, "empty PATH"},
		{"root not first", "/a 0 100644 1 0 0 0 0.0 - - -\n", false, 1, `root directory "/" must be the first line`},
		{"root twice", dumpRootLine + dumpRootLine, false, 2, "root directory listed twice"},
		{"root not dir", "/ 0 100644 1 0 0 0 0.0 - - -\n", false, 1, "root must be a directory"},
		{"root hardlink", "/ 0 @40755 1 0 0 0 0.0 / - -\n", false, 1, "directories cannot be hardlinked"},
		{"relative path", dumpRootLine + "a 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "path is not absolute"},
		{"trailing slash", dumpRootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/d/ 0 40755 1 0 0 0 0.0 - - -\n", false, 3, "empty path component"},
		{"double slash", dumpRootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/d//a 0 100644 1 0 0 0 0.0 - - -\n", false, 3, "empty path component"},
		{"dot in middle", dumpRootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/d/./a 0 100644 1 0 0 0 0.0 - - -\n", false, 3, `"." or ".."`},
		{"name too long", dumpRootLine + "/" + long("n", 256) + " 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "longer than 255 bytes"},
		{"duplicate", dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n", false, 3, "path listed twice"},
		{"parent missing", dumpRootLine + "/a/b 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "parent directory /a does not exist"},
		{"parent not dir", dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", false, 3, "parent /a is not a directory"},
		{"parent is link", dumpRootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/l 0 @100644 1 0 0 0 0.0 /d - -\n/l/x 0 100644 1 0 0 0 0.0 - - -\n", false, 4, "parent /l is not a directory"},
		{"nul byte", dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - -\x00\n", false, 2, "NUL byte at column 30"},
		{"escaped nul in path", dumpRootLine + "/a\\x00b 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "PATH contains a NUL byte"},
		{"bad escape", dumpRootLine + "/a\\q 0 100644 1 0 0 0 0.0 - - -\n", false, 2, `unsupported escape \q`},
		{"short hex escape", dumpRootLine + "/a\\x4 0 100644 1 0 0 0 0.0 - - -\n", false, 2, `\x must be followed by two hex digits`},
		{"bad hex escape", dumpRootLine + "/a\\xg0 0 100644 1 0 0 0 0.0 - - -\n", false, 2, `\x must be followed by two hex digits`},
		{"trailing backslash", dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - - user.a=b\\\n", false, 2, "backslash at end of dumpFieldText"},
		{"bad size", dumpRootLine + "/a x 100644 1 0 0 0 0.0 - - -\n", false, 2, `invalid SIZE "x"`},
		{"negative size", dumpRootLine + "/a -1 100644 1 0 0 0 0.0 - - -\n", false, 2, `invalid SIZE "-1"`},
		{"size overflow", dumpRootLine + "/a 18446744073709551616 100644 1 0 0 0 0.0 - - -\n", false, 2, "invalid SIZE"},
		{"bad mode", dumpRootLine + "/a 0 100648 1 0 0 0 0.0 - - -\n", false, 2, `invalid MODE "100648"`},
		{"mode too big", dumpRootLine + "/a 0 40000000000 1 0 0 0 0.0 - - -\n", false, 2, "invalid MODE"},
		{"mode no type", dumpRootLine + "/a 0 170644 1 0 0 0 0.0 - - -\n", false, 2, "MODE 170644 has no valid file type"},
		{"two spaces", dumpRootLine + "/a  0 100644 1 0 0 0 0.0 - - -\n", false, 2, "MODE 0 has no valid file type"},
		{"empty size", dumpRootLine + "/a  100644 1 0 0 0 0.0 - - -\n", false, 2, `invalid SIZE ""`},
		{"bad nlink", dumpRootLine + "/a 0 100644 4294967296 0 0 0 0.0 - - -\n", false, 2, "invalid NLINK"},
		{"bad uid", dumpRootLine + "/a 0 100644 1 +1 0 0 0.0 - - -\n", false, 2, "invalid UID"},
		{"bad gid", dumpRootLine + "/a 0 100644 1 0 x 0 0.0 - - -\n", false, 2, "invalid GID"},
		{"bad rdev", dumpRootLine + "/a 0 20644 1 0 0 x 0.0 - - -\n", false, 2, "invalid RDEV"},
		{"mtime no dot", dumpRootLine + "/a 0 100644 1 0 0 0 5 - - -\n", false, 2, "invalid MTIME"},
		{"mtime empty nsec", dumpRootLine + "/a 0 100644 1 0 0 0 5. - - -\n", false, 2, "invalid MTIME"},
		{"mtime two dots", dumpRootLine + "/a 0 100644 1 0 0 0 5.1.2 - - -\n", false, 2, "invalid MTIME"},
		{"mtime nsec overflow", dumpRootLine + "/a 0 100644 1 0 0 0 5.4294967296 - - -\n", false, 2, "invalid MTIME"},
		{"missing fields", dumpRootLine + "/a 0 100644 1 0 0\n", false, 2, "invalid RDEV"},
		{"symlink no target", dumpRootLine + "/l 1 120777 1 0 0 0 0.0 - - -\n", false, 2, "symlink without a target"},
		{"symlink empty target", dumpRootLine + "/l 0 120777 1 0 0 0 0.0  - -\n", false, 2, "symlink with an empty target"},
		{"symlink too long", dumpRootLine + "/l 4096 120777 1 0 0 0 0.0 " + long("a", 4096) + " - -\n", false, 2, "symlink target longer than 4095 bytes"},
		{"symlink nul", dumpRootLine + "/l 3 120777 1 0 0 0 0.0 a\\x00b - -\n", false, 2, "PAYLOAD contains a NUL byte"},
		{"payload too long", dumpRootLine + "/f 1 100644 1 0 0 0 0.0 " + long("a", 4096) + " - -\n", false, 2, "PAYLOAD longer than 4095 bytes"},
		{"content size", dumpRootLine + "/f 4 100644 1 0 0 0 0.0 - abc -\n", false, 2, "CONTENT is 3 bytes but SIZE is 4"},
		{"content too big", dumpRootLine + "/f 5001 100644 1 0 0 0 0.0 - " + long("c", 5001) + " -\n", false, 2, "inline content of 5001 bytes"},
		{"content on dir too big", dumpRootLine + "/d 5001 40755 1 0 0 0 0.0 - " + long("c", 5001) + " -\n", false, 2, "inline content of 5001 bytes"},
		{"too big", dumpRootLine + "/f 9007199254740993 100644 1 0 0 0 0.0 - - -\n", false, 2, "file too big"},
		{"digest short", dumpRootLine + "/f 1 100644 1 0 0 0 0.0 - - abcd\n", false, 2, "DIGEST must be 64 hex digits"},
		{"digest not hex", dumpRootLine + "/f 1 100644 1 0 0 0 0.0 - - " + long("g", 64) + "\n", false, 2, "is not hexadecimal"},
		{"digest zero", dumpRootLine + "/f 100 100644 1 0 0 0 0.0 - - " + long("0", 64) + "\n", false, 2, "DIGEST is all zeros"},
		{"xattr no equals", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a\n", false, 2, `xattr "user.a" has no '='`},
		{"xattr empty dumpFieldText", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=1  user.b=2\n", false, 2, "empty xattr dumpFieldText"},
		{"two trailing spaces", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - -  \n", false, 2, "empty xattr dumpFieldText"},
		{"xattr empty key", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - =v\n", false, 2, "empty xattr key"},
		{"xattr key nul", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - a\\x00b=v\n", false, 2, "xattr key contains a NUL byte"},
		{"xattr key long", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - " + long("k", 256) + "=v\n", false, 2, "xattr key longer than 255 bytes"},
		{"xattr value long", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + long("v", 65536) + "\n", false, 2, "value longer than 65535 bytes"},
		{"xattr budget", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + long("v", 32743) + "\n", false, 2, "xattrs too large: 32768 bytes"},
		{"xattr budget running", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + long("v", 20000) + " user.b=" + long("v", 20000) + " user.a=x\n", false, 2, "xattrs too large"},
		{"xattr text", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + long("\\x00", 32768) + "\n", false, 2, "xattrs take more than 131072 bytes"},
		{"xattr bad escape", dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=\\y\n", false, 2, `xattr user.a: value: unsupported escape \y`},
		{"link no target", dumpRootLine + "/l 0 @100644 1 0 0 0 0.0 - - -\n", false, 2, "hardlink without a target"},
		{"link missing", dumpRootLine + "/l 0 @100644 1 0 0 0 0.0 /nope - -\n", false, 2, "hardlink target /nope does not exist"},
		{"link to dir", dumpRootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/l 0 @100644 1 0 0 0 0.0 /d - -\n", false, 3, "hardlink target /d is a directory"},
		{"link to root", dumpRootLine + "/l 0 @100644 1 0 0 0 0.0  - -\n", false, 2, `hardlink target "" is a directory`},
		{"link self", dumpRootLine + "/l 0 @100644 1 0 0 0 0.0 /l - -\n", false, 2, "hardlink to itself"},
		{"link cycle", dumpRootLine + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", false, 2, "hardlink cycle"},
		{"link target nul", dumpRootLine + "/l 0 @100644 1 0 0 0 0.0 /a\\x00 - -\n", false, 2, "hardlink target contains a NUL byte"},
		{"link bad mode", dumpRootLine + "/l 0 @0 1 0 0 0 0.0 /a - -\n", false, 2, "MODE 0 has no valid file type"},
		{"strict newline", dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - -", true, 2, "missing newline at end of file"},
		{"strict symlink size", dumpRootLine + "/l 5 120777 1 0 0 0 0.0 abc - -\n", true, 2, "symlink SIZE 5 does not match its target length 3"},
		{"strict symlink content", dumpRootLine + "/l 3 120777 1 0 0 0 0.0 abc abc -\n", true, 2, "symlink with CONTENT"},
		{"strict rdev", dumpRootLine + "/a 0 100644 1 0 0 7 0.0 - - -\n", true, 2, "RDEV 7 on a file that is not a device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDump(strings.NewReader(tc.text), DumpOptions{Strict: tc.strict})
			var de *DumpError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want a *DumpError", err)
			}
			if de.Line != tc.line {
				t.Errorf("line %d, want %d (%v)", de.Line, tc.line, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestDumpErrorFormat(t *testing.T) {
	text := dumpRootLine + "/usr 0 40755 1 0 0 0 0.0 - - -\n/usr/a\\x20b 4096 120777 1 0 0 0 0.0 " + strings.Repeat("x", 4096) + " - -\n"
	_, err := ParseDump(strings.NewReader(text), DumpOptions{})
	const want = `line 3: /usr/a\x20b: symlink target longer than 4095 bytes (4096)`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	var de *DumpError
	if !errors.As(err, &de) || de.Path != "/usr/a b" || de.Line != 3 {
		t.Fatalf("fields: %+v", de)
	}
	// Tree errors are wrapped.
	_, err = ParseDump(strings.NewReader(dumpRootLine+"/d 0 40755 1 0 0 0 0.0 - - -\n/d/.. 0 100644 1 0 0 0 0.0 - - -\n"), DumpOptions{})
	if !errors.Is(err, ErrDotName) {
		t.Errorf("%v does not wrap ErrDotName", err)
	}
	_, err = ParseDump(strings.NewReader(dumpRootLine+dumpRootLine[1:]), DumpOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Errorf("got %v", err)
	}
}

func TestParseDumpFields(t *testing.T) {
	digest := strings.Repeat("0123456789abcdef", 4)
	text := "/ 4096 40755 3 0 0 0 1633950376.5 - - - user.root=1\n" +
		"/reg 10 100644 2 1000 1001 0 -1.999999999 ab/cdef - " + strings.ToUpper(digest) + " user.a=1 trusted.b=x\\x3dy\n" +
		"/inline 3 100600 1 0 0 0 0.0 - a\\nb -\n" +
		"/link 3 120777 1 0 0 0 18446744073709551615.0 a\\x20b - -\n" +
		"/chr 0 20644 1 0 0 1234 0.0 - - -\n" +
		"/blk 0 60644 1 0 0 5 0.0 - - -\n" +
		"/fifo 0 10644 1 0 0 0 0.0 - - -\n" +
		"/sock 0 140644 1 0 0 0 0.0 - - -\n" +
		"/dir 12345 40700 2 0 0 0 0.0 - - -\n" +
		"/dash 1 100644 1 0 0 0 0.0 \\x2d \\x2d -\n" +
		"/big 65 1020644 1 0 0 0 0.0 p - -\n"
	root := mustParseDump(t, text, true)
	get := func(p string) *Node {
		n, err := Resolve(root, p)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if root.Nlink != 3 || root.Mtime != (Timespec{1633950376, 5}) || len(root.Xattrs) != 1 {
		t.Errorf("root: %+v", root)
	}
	reg := get("/reg")
	wantDigest := []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	if reg.Size != 10 || reg.Mode != 0o100644 || reg.Nlink != 2 || reg.UID != 1000 || reg.GID != 1001 ||
		reg.Mtime != (Timespec{-1, 999999999}) || reg.Payload != "ab/cdef" || reg.Content != nil ||
		!bytes.Equal(reg.Digest[:], bytes.Repeat(wantDigest, 4)) || !reg.IsExternal() {
		t.Errorf("reg: %+v", reg)
	}
	if want := []Xattr{{"user.a", "1"}, {"trusted.b", "x=y"}}; !cmp.Equal(reg.Xattrs, want) {
		t.Errorf("xattrs %v", reg.Xattrs)
	}
	if in := get("/inline"); string(in.Content) != "a\nb" || in.Size != 3 {
		t.Errorf("inline: %+v", in)
	}
	if l := get("/link"); l.Payload != "a b" || l.Size != 3 || l.Mtime.Sec != -1 {
		t.Errorf("link: %+v", l)
	}
	if c := get("/chr"); c.Rdev != 1234 || c.Type() != ModeChr {
		t.Errorf("chr: %+v", c)
	}
	if b := get("/blk"); b.Rdev != 5 {
		t.Errorf("blk: %+v", b)
	}
	if d := get("/dir"); d.Size != 12345 || !d.IsDir() {
		t.Errorf("dir: %+v", d)
	}
	if d := get("/dash"); d.Payload != "-" || string(d.Content) != "-" {
		t.Errorf("dash: %+v", d)
	}
	// Mode bits beyond st_mode's 16 are kept, like upstream (the image
	// keeps 16).
	if b := get("/big"); b.Mode != 0o1020644 || b.Payload != "" || b.Size != 65 {
		t.Errorf("big: %+v", b)
	}
	out := dumpRoundTrip(t, root)
	for _, want := range []string{
		"/reg 10 100644 2 1000 1001 0 -1.999999999 ab/cdef - " + digest + " user.a=1 trusted.b=x\\x3dy\n",
		"/link 3 120777 1 0 0 0 -1.0 a\\x20b - -\n",
		"/dash 1 100644 1 0 0 0 0.0 \\x2d \\x2d -\n",
		"/big 65 1020644 1 0 0 0 0.0 - - -\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestParseDumpLax(t *testing.T) {
	// Accepted without Strict, with what upstream keeps.
	text := "/ 4096 40755 2 0 0 9 0.0 - - -\n" +
		"/l 3 120777 1 0 0 3 0.0 target xyz\n" + // size ignored, content dropped, no DIGEST field
		"/f 0 100644 1 0 0 0 0.0 p  - user.a=1 \n" + // empty CONTENT, trailing space
		"/c 0 20777 1 0 0 0 0.0 payload\n" + // payload on a device is dropped; missing fields
		"/d 1 40755 1 0 0 0 0.0 p x " + strings.Repeat("ab", 32) + "\n" + // only regular files keep these
		"/last 0 100644 1 0 0 0 0.0 - - -" // no final newline
	if _, err := ParseDump(strings.NewReader(text), DumpOptions{Strict: true}); err == nil {
		t.Fatal("strict parse accepted lax input")
	}
	root := mustParseDump(t, text, false)
	if root.Rdev != 0 {
		t.Errorf("rdev kept on a directory")
	}
	l := root.Lookup("l")
	if l.Size != 6 || l.Payload != "target" || l.Content != nil || l.Rdev != 0 {
		t.Errorf("l: %+v", l)
	}
	f := root.Lookup("f")
	if f.Content != nil || f.Payload != "p" || len(f.Xattrs) != 1 {
		t.Errorf("f: %+v", f)
	}
	c := root.Lookup("c")
	if c.Payload != "" || !c.Digest.IsZero() {
		t.Errorf("c: %+v", c)
	}
	d := root.Lookup("d")
	if d.Payload != "" || d.Content != nil || !d.Digest.IsZero() || d.Size != 1 {
		t.Errorf("d: %+v", d)
	}
	if root.Lookup("last") == nil {
		t.Error("last line without newline lost")
	}
	dumpRoundTrip(t, root)
}

func TestParseDumpOrder(t *testing.T) {
	text := dumpRootLine +
		"/z 0 40755 2 0 0 0 0.0 - - -\n" +
		"/b 0 100644 1 0 0 0 0.0 - - -\n" +
		"/z/y 0 100644 1 0 0 0 0.0 - - -\n" +
		"/a 0 40755 2 0 0 0 0.0 - - -\n" +
		"/z/x 0 100644 1 0 0 0 0.0 - - -\n" +
		"/a/q 0 40755 2 0 0 0 0.0 - - -\n" +
		"/z/w 0 40755 2 0 0 0 0.0 - - -\n" +
		"/a/q/r 0 100644 1 0 0 0 0.0 - - -\n" +
		"/z/w/v 0 100644 1 0 0 0 0.0 - - -\n" +
		"/a/p 0 100644 1 0 0 0 0.0 - - -\n"
	root := mustParseDump(t, text, true)
	checkDumpTree(t, root)
	got := dumpToString(t, root, DumpPrintOptions{})
	var paths []string
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		paths = append(paths, strings.Fields(line)[0])
	}
	want := []string{"/", "/a", "/a/p", "/a/q", "/a/q/r", "/b", "/z", "/z/w", "/z/w/v", "/z/x", "/z/y"}
	if !cmp.Equal(paths, want) {
		t.Errorf("order %v, want %v", paths, want)
	}
}

func TestParseDumpXattrDuplicates(t *testing.T) {
	root := mustParseDump(t, dumpRootLine+"/f 0 100644 1 0 0 0 0.0 - - - a=1 b=2 a=3 c=4 b=5\n", true)
	want := []Xattr{{"a", "3"}, {"c", "4"}, {"b", "5"}}
	if got := root.Lookup("f").Xattrs; !cmp.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Many xattrs with duplicates go through the index.
	var b strings.Builder
	b.WriteString(dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - -")
	for i := range 300 {
		b.WriteString(" user.k" + string(rune('a'+i%40)) + "=" + strings.Repeat("v", i%7))
	}
	b.WriteString("\n")
	f := mustParseDump(t, b.String(), true).Lookup("f")
	if len(f.Xattrs) != 40 {
		t.Fatalf("%d xattrs", len(f.Xattrs))
	}
	for i, x := range f.Xattrs {
		j := 260 + i
		if x.Key != "user.k"+string(rune('a'+j%40)) || len(x.Value) != j%7 {
			t.Errorf("xattr %d: %v", i, x)
		}
	}
	// The exact budget: 12 + 7 + 6 + 32742 = 32767.
	mustParseDump(t, dumpRootLine+"/f 0 100644 1 0 0 0 0.0 - - - user.a="+strings.Repeat("v", 32742)+"\n", true)
	// Replacing a value frees its budget.
	mustParseDump(t, dumpRootLine+"/f 0 100644 1 0 0 0 0.0 - - - user.a="+strings.Repeat("v", 30000)+" user.a="+strings.Repeat("w", 30000)+"\n", true)
	// A 65535-byte value fits a key's limit but not the budget.
	_, err := ParseDump(strings.NewReader(dumpRootLine+"/f 0 100644 1 0 0 0 0.0 - - - foo="+strings.Repeat("a", 65535)+"\n"), DumpOptions{})
	if err == nil || !strings.Contains(err.Error(), "xattrs too large") {
		t.Errorf("got %v", err)
	}
}

func TestParseDumpHardlinks(t *testing.T) {
	text := dumpRootLine +
		"/a 0 @100644 1 0 0 0 0.0 /b - -\n" + // chain a -> b -> d/c, listed before its target
		"/b 99 @100755 7 7 7 7 7.7 /d/c junk junk junk=junk\n" +
		"/d 0 40755 2 0 0 0 0.0 - - -\n" +
		"/d/c 5 100755 3 1 2 0 9.1 - hello - user.x=1\n" +
		"/e 0 @120777 1 0 0 0 0.0 //d///c - -\n" // repeated slashes are skipped
	root := mustParseDump(t, text, true)
	c := root.Lookup("d").Lookup("c")
	for _, name := range []string{"a", "b", "e"} {
		l := root.Lookup(name)
		if l.LinkTo != c {
			t.Errorf("%s links to %v", name, l.LinkTo)
		}
		if l.Size != 0 || l.Nlink != 0 || l.Xattrs != nil || len(l.Children) != 0 {
			t.Errorf("%s carries fields of its line: %+v", name, l)
		}
	}
	if root.Lookup("b").Mode != 0o100755 || root.Lookup("e").Mode != 0o120777 {
		t.Errorf("link modes not kept")
	}
	if c.Nlink != 3 {
		t.Errorf("target nlink %d, want 3 as given", c.Nlink)
	}
	out := dumpRoundTrip(t, root)
	wantLine := "/a 5 @100755 3 1 2 0 9.1 /d/c hello - user.x=1\n"
	if !strings.Contains(out, wantLine) {
		t.Errorf("output lacks %q:\n%s", wantLine, out)
	}

	// A link to an escaped name prints the escaped path.
	root = mustParseDump(t, dumpRootLine+"/x\\ty 1 100644 1 0 0 0 0.0 - z -\n/l 0 @100644 0 0 0 0 0.0 /x\\ty - -\n", true)
	if out := dumpToString(t, root, DumpPrintOptions{}); !strings.Contains(out, "/l 1 @100644 1 0 0 0 0.0 /x\\ty z -\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestParseDumpLongLine(t *testing.T) {
	// Lines longer than bufio's buffer are assembled.
	val := strings.Repeat("\\x01", 30000)
	text := dumpRootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + val + "\n/g 0 100644 1 0 0 0 0.0 - - -\n"
	root := mustParseDump(t, text, true)
	if x := root.Lookup("f").Xattrs; len(x) != 1 || len(x[0].Value) != 30000 {
		t.Fatalf("xattr lost")
	}
	if root.Lookup("g") == nil {
		t.Fatal("line after a long line lost")
	}
	dumpRoundTrip(t, root)
}

type dumpErrReader struct{ r io.Reader }

func (e *dumpErrReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, errors.New("read failed")
	}
	return n, err
}

func TestParseDumpReadError(t *testing.T) {
	for _, text := range []string{dumpRootLine, dumpRootLine + "/a 0 100644 1 0 0 0 0.0 - - -"} {
		_, err := ParseDump(&dumpErrReader{strings.NewReader(text)}, DumpOptions{Strict: true})
		var de *DumpError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "read failed") {
			t.Errorf("got %v", err)
		}
	}
}

func BenchmarkParseDumpCS9(b *testing.B) {
	data := readDumpAsset(b, filepath.Join(conformance.Dir(b), "cs9-x86_64-developer.dump.gz"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseDumpRandomTrees generates random valid dumps, written with
// random (over-)escaping and in random valid order, and checks the round
// trip through the printer.
func TestParseDumpRandomTrees(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	field := func(b []byte) []byte {
		var out []byte
		for _, c := range b {
			if c == ' ' || c == '\n' || c == '\\' || c == 0 || r.IntN(8) == 0 {
				out = append(out, fmt.Sprintf(`\x%02X`, c)...)
			} else {
				out = append(out, c)
			}
		}
		return out
	}
	randBytes := func(min, max int) []byte {
		b := make([]byte, min+r.IntN(max-min+1))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	type entry struct {
		path  []byte
		dir   bool
		typ   uint32
		link  int // index of the target entry, -1 if none
		depth int
	}
	skipped := 0
	for iter := range 300 {
		entries := []entry{{path: []byte{}, dir: true, typ: ModeDir, link: -1}}
		seen := map[string]bool{}
		for range 1 + r.IntN(40) {
			var parents []int
			for i, e := range entries {
				if e.dir {
					parents = append(parents, i)
				}
			}
			p := entries[parents[r.IntN(len(parents))]]
			name := randBytes(1, 12)
			for i, c := range name {
				if c == '/' || c == 0 {
					name[i] = 'x'
				}
			}
			if string(name) == "." || string(name) == ".." {
				continue
			}
			path := append(append(append([]byte{}, p.path...), '/'), name...)
			if seen[string(path)] {
				continue
			}
			seen[string(path)] = true
			types := []uint32{ModeDir, ModeReg, ModeReg, ModeSymlink, ModeChr, ModeBlk, ModeFifo, ModeSock}
			typ := types[r.IntN(len(types))]
			entries = append(entries, entry{path: path, dir: typ == ModeDir, typ: typ, link: -1})
		}
		for i := range entries {
			if !entries[i].dir && r.IntN(5) == 0 {
				j := r.IntN(len(entries))
				if j != i && !entries[j].dir {
					entries[i].link = j
				}
			}
		}
		var text []byte
		for i, e := range entries {
			if i == 0 {
				text = append(text, "/"...)
			} else {
				text = append(text, field(e.path)...)
			}
			perm := uint32(r.IntN(0o7777 + 1))
			if e.link >= 0 {
				text = fmt.Appendf(text, " %d @%o 1 0 0 0 0.0 %s - -\n", r.IntN(100), e.typ|perm, field(entries[e.link].path))
				continue
			}
			size := uint64(r.IntN(100000))
			payload, content, digest := []byte("-"), []byte("-"), "-"
			rdev := uint64(0)
			switch e.typ {
			case ModeReg:
				if r.IntN(2) == 0 {
					c := randBytes(0, 300)
					size = uint64(len(c))
					content = field(c)
					if len(c) == 0 {
						content = nil
					}
				}
				if r.IntN(2) == 0 {
					b := randBytes(1, 80)
					for i, c := range b {
						if c == 0 {
							b[i] = 'y'
						}
					}
					payload = field(b)
				}
				if r.IntN(2) == 0 {
					digest = fmt.Sprintf("%x", randBytes(32, 32))
				}
			case ModeSymlink:
				target := randBytes(1, 200)
				for i, c := range target {
					if c == 0 {
						target[i] = 'z'
					}
				}
				size = uint64(len(target))
				payload = field(target)
			case ModeChr, ModeBlk:
				rdev = r.Uint64() >> r.IntN(64)
			}
			text = fmt.Appendf(text, " %d %o %d %d %d %d %d.%d %s %s %s", size, e.typ|perm,
				r.Uint32(), r.Uint32(), r.Uint32(), rdev, r.Int64()>>r.IntN(64)*int64(1-2*r.IntN(2)), r.Uint32(),
				payload, content, digest)
			keys := map[string]bool{}
			for range r.IntN(5) {
				k := randBytes(1, 30)
				for i, c := range k {
					if c == 0 {
						k[i] = 'k'
					}
				}
				if keys[string(k)] {
					continue
				}
				keys[string(k)] = true
				kf := field(k)
				kf = bytes.ReplaceAll(kf, []byte("="), []byte(`\x3d`))
				text = fmt.Appendf(text, " %s=%s", kf, field(randBytes(0, 100)))
			}
			text = append(text, '\n')
		}
		root, err := ParseDump(bytes.NewReader(text), DumpOptions{Strict: true})
		if err != nil {
			if strings.Contains(err.Error(), "hardlink cycle") || strings.Contains(err.Error(), "hardlink to itself") {
				skipped++
				continue
			}
			t.Fatalf("iteration %d: %v\n%q", iter, err, text)
		}
		checkDumpTree(t, root)
		dumpRoundTrip(t, root)
	}
	if skipped > 100 {
		t.Errorf("%d of 300 random trees skipped", skipped)
	}
}
