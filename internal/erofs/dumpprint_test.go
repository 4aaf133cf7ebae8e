package erofs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		in    string
		flags escapeFlags
		want  string
	}{
		{"", 0, ""},
		{"plain/path.txt", 0, "plain/path.txt"},
		{"a b", 0, `a\x20b`},
		{"a b", escKeepSpace, "a b"},
		{"\\\n\r\t", 0, `\\\n\r\t`},
		{"\x00\x01\x1f\x7f\x80\xff", 0, `\x00\x01\x1f\x7f\x80\xff`},
		{"k=v", 0, "k=v"},
		{"k=v", escEqual, `k\x3dv`},
		{"-", 0, "-"},
		{"-", escLoneDash, `\x2d`},
		{"--", escLoneDash, "--"},
		{"-", escLoneDash | escEqual, `\x2d`},
		{"~!@#$%^&*()_+{}|:\"<>?`[];',./", 0, "~!@#$%^&*()_+{}|:\"<>?`[];',./"},
		{"é", 0, `\xc3\xa9`},
	}
	for _, tc := range tests {
		if got := string(appendEscaped(nil, tc.in, tc.flags)); got != tc.want {
			t.Errorf("escape(%q, %b) = %q, want %q", tc.in, tc.flags, got, tc.want)
		}
		if got := string(appendEscaped(nil, []byte(tc.in), tc.flags)); got != tc.want {
			t.Errorf("escape([]byte %q, %b) = %q, want %q", tc.in, tc.flags, got, tc.want)
		}
	}
	if got := EscapeField("a b\x7f"); got != `a\x20b\x7f` {
		t.Errorf("EscapeField: %q", got)
	}
	if got := EscapeForLs("a b\tc"); got != `a b\tc` {
		t.Errorf("EscapeForLs: %q", got)
	}
	// Every byte: graphic ASCII other than '\' stays, the rest is escaped
	// and decodes back.
	for c := range 256 {
		s := string([]byte{byte(c)})
		e := EscapeField(s)
		graphic := c > ' ' && c < 0x7f && c != '\\'
		if graphic != (e == s) {
			t.Errorf("byte %#x escaped as %q", c, e)
		}
		if strings.ContainsAny(e, " \n") {
			t.Errorf("byte %#x: escape %q holds a separator", c, e)
		}
		if back, err := unescapeField(e); err != nil || back != s {
			t.Errorf("byte %#x: %q decodes to %q, %v", c, e, back, err)
		}
	}
}

func TestUnescape(t *testing.T) {
	good := map[string]string{
		"":              "",
		"abc":           "abc",
		`\\`:            `\`,
		`\n\r\t`:        "\n\r\t",
		`\x41\x4a\x4A`:  "AJJ",
		`\xff\x00`:      "\xff\x00",
		`a\x20b`:        "a b",
		`\x2d`:          "-",
		"raw\xffbytes=": "raw\xffbytes=",
	}
	for in, want := range good {
		if got, err := unescapeField(in); err != nil || got != want {
			t.Errorf("unescapeField(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]error{
		`\`:      ErrEscapeTruncated,
		`ab\`:    ErrEscapeTruncated,
		`\x`:     ErrEscapeHex,
		`\x4`:    ErrEscapeHex,
		`\xg1`:   ErrEscapeHex,
		`\x1g`:   ErrEscapeHex,
		`\a`:     ErrEscapeUnknown,
		`\0`:     ErrEscapeUnknown,
		`\ `:     ErrEscapeUnknown,
		"\\\x01": ErrEscapeUnknown,
	}
	for in, want := range bad {
		if _, err := unescapeField(in); !errors.Is(err, want) {
			t.Errorf("unescapeField(%q): %v, want %v", in, err, want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		b := make([]byte, r.IntN(20))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		for _, flags := range []escapeFlags{0, escEqual, escKeepSpace, escLoneDash} {
			e := appendEscaped(nil, b, flags)
			if back, err := unescapeField(string(e)); err != nil || back != string(b) {
				t.Fatalf("%q -> %q -> %q, %v", b, e, back, err)
			}
		}
	}
}

// TestWriteDumpHandBuilt prints a tree that did not come from the parser:
// only what ParseDump would keep is printed, and the result parses.
func TestWriteDumpHandBuilt(t *testing.T) {
	root := NewDirectory("", 0o755)
	root.Size = 4096
	add := func(n *Node) *Node {
		if err := root.AddChild(n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	target := add(&Node{Name: "t", Mode: ModeReg | 0o644, Nlink: 2, Size: 99, Content: []byte("hi"),
		Digest: verity.Digest(bytes.Repeat([]byte{0xab}, 32)), Xattrs: []Xattr{{"user.b", "2"}, {"user.a", "1 ="}}})
	add(&Node{Name: "l", Mode: ModeReg | 0o600, LinkTo: target})
	add(&Node{Name: "s", Mode: ModeSymlink | 0o777, Size: 1, Payload: "target", Content: []byte("x")})
	add(&Node{Name: "d", Mode: ModeDir | 0o700, Size: 7, Payload: "p", Rdev: 5, Digest: verity.Digest(bytes.Repeat([]byte{1}, 32))})
	add(&Node{Name: "c", Mode: ModeChr | 0o600, Rdev: 0x0501, Mtime: Timespec{-3, 7}})
	add(&Node{Name: "x y", Mode: ModeFifo | 0o600, Payload: "-"})
	// Children out of order: printed sorted anyway.
	root.Children[0], root.Children[1] = root.Children[1], root.Children[0]

	got := dumpToString(t, root, DumpPrintOptions{})
	want := "/ 4096 40755 2 0 0 0 0.0 - - -\n" +
		"/c 0 20600 0 0 0 1281 -3.7 - - -\n" +
		"/d 7 40700 0 0 0 0 0.0 - - -\n" +
		"/l 2 @100644 2 0 0 0 0.0 /t hi " + strings.Repeat("ab", 32) + " user.b=2 user.a=1\\x20\\x3d\n" +
		"/s 6 120777 0 0 0 0 0.0 target - -\n" +
		"/t 2 100644 2 0 0 0 0.0 - hi " + strings.Repeat("ab", 32) + " user.b=2 user.a=1\\x20\\x3d\n" +
		"/x\\x20y 0 10600 0 0 0 0 0.0 - - -\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	back := mustParseDump(t, got, true)
	if text := dumpToString(t, back, DumpPrintOptions{}); text != got {
		t.Errorf("reprinted:\n%s", text)
	}
}

func TestWriteDumpTopLevel(t *testing.T) {
	data := readDumpAsset(t, filepath.Join(conformance.Dir(t), "special.dump"))
	root := mustParseDump(t, string(data), true)
	out := dumpToString(t, root, DumpPrintOptions{TopLevel: []string{"chardev", "inline", "whiteout", "missing"}})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for i, prefix := range []string{"/ 4096 40555", "/chardev 0 20777", "/inline 15 100777", "/whiteout 0 20777"} {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d: %q", i, lines[i])
		}
	}

	// Links whose target is filtered out: the first one stands in.
	root = mustParseDump(t, dumpRootLine+
		"/a 0 40755 2 0 0 0 0.0 - - -\n"+
		"/a/l1 0 @100644 1 0 0 0 0.0 /t - -\n"+
		"/a/l2 0 @100644 1 0 0 0 0.0 /t - -\n"+
		"/b 0 @100644 1 0 0 0 0.0 /t - -\n"+
		"/t 3 100644 3 0 0 0 0.0 - abc -\n", true)
	out = dumpToString(t, root, DumpPrintOptions{TopLevel: []string{"a", "b"}})
	want := dumpRootLine +
		"/a 0 40755 2 0 0 0 0.0 - - -\n" +
		"/a/l1 3 100644 3 0 0 0 0.0 - abc -\n" +
		"/a/l2 3 @100644 3 0 0 0 0.0 /a/l1 abc -\n" +
		"/b 3 @100644 3 0 0 0 0.0 /a/l1 abc -\n"
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	mustParseDump(t, out, true)
}

func TestWriteDumpNil(t *testing.T) {
	if err := WriteDump(io.Discard, nil, DumpPrintOptions{}); err == nil {
		t.Error("nil root accepted")
	}
}

type dumpFailWriter struct{}

func (dumpFailWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteDumpError(t *testing.T) {
	data := readDumpAsset(t, filepath.Join(conformance.Dir(t), "cs9-x86_64-minimal.dump.gz"))
	root := mustParseDump(t, string(data), true)
	if err := WriteDump(dumpFailWriter{}, root, DumpPrintOptions{}); err == nil || err.Error() != "disk full" {
		t.Errorf("got %v", err)
	}
}

func BenchmarkWriteDumpCS9(b *testing.B) {
	data := readDumpAsset(b, filepath.Join(conformance.Dir(b), "cs9-x86_64-developer.dump.gz"))
	root, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: true})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := WriteDump(io.Discard, root, DumpPrintOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// unescapeField decodes the escapes of one dump field as the parser does.
func unescapeField(s string) (string, error) {
	b, err := appendUnescaped(nil, []byte(s))
	return string(b), err
}
