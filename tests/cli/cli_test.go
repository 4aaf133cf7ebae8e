// Package cli tests the upstream-compatible front ends by running the real
// binary, through the subcommand and through argv[0] symlinks.
package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// bin builds cfs-deploy and links the upstream tool names to it; it
// returns the directory that holds them.
func bin(t *testing.T) string {
	t.Helper()
	b := gobuild.T(t, "./cmd/cfs-deploy")
	for _, n := range []string{"mkcomposefs", "composefs-info"} {
		if _, err := gobuild.Alias(b, n); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Dir(b)
}

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, stdin []byte, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin(t), name), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return result{o.String(), e.String(), code}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestMkcomposefsFromFileGolden runs the argv[0] front end on stdin and to
// stdout, and the subcommand to a file, against an upstream golden hash.
func TestMkcomposefsFromFileGolden(t *testing.T) {
	assets := conformance.Dir(t)
	dump, err := conformance.ReadMaybeGzip(filepath.Join(assets, "config.dump.gz"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(assets, "config.dump.gz.sha256"))
	r := run(t, dump, "mkcomposefs", "--from-file", "-", "-")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := sha([]byte(r.stdout)); got != strings.TrimSpace(string(want)) {
		t.Fatalf("stdout image sha256 %s, upstream %s", got, want)
	}

	dir := t.TempDir()
	in := filepath.Join(dir, "config.dump")
	os.WriteFile(in, dump, 0o644)
	img := filepath.Join(dir, "img")
	r = run(t, nil, "cfs-deploy", "mkcomposefs", "--print-digest", "--from-file", in, img)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	data, _ := os.ReadFile(img)
	if sha(data) != strings.TrimSpace(string(want)) {
		t.Fatal("file image differs from upstream")
	}
	if got, wantD := strings.TrimSpace(r.stdout), verity.DigestBytes(data).String(); got != wantD {
		t.Fatalf("--print-digest printed %q, image digest is %s", got, wantD)
	}
	r = run(t, nil, "mkcomposefs", "--print-digest-only", "--from-file", in)
	if strings.TrimSpace(r.stdout) != verity.DigestBytes(data).String() {
		t.Fatalf("--print-digest-only printed %q", r.stdout)
	}
}

// TestMkcomposefsRefusesBadDumpWithoutPartialImage checks the error names
// the line and nothing is left at the destination or beside it.
func TestMkcomposefsRefusesBadDumpWithoutPartialImage(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "out.img")
	bad := []byte("/ 4096 40755 2 0 0 0 0.0 - - -\n/a 10 100644 1 0 0 0 0.0 - short -\n")
	r := run(t, bad, "mkcomposefs", "--from-file", "-", img)
	if r.code == 0 {
		t.Fatal("bad dump accepted")
	}
	if !strings.Contains(r.stderr, "line 2") {
		t.Errorf("error does not name the line: %q", r.stderr)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestMkcomposefsDirectory builds from a directory with a digest store and
// checks inlining, object names and object contents.
func TestMkcomposefsDirectory(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	small := []byte("tiny file\n")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	os.WriteFile(filepath.Join(src, "small"), small, 0o644)
	os.WriteFile(filepath.Join(src, "sub", "big"), big, 0o644)
	os.Symlink("sub/big", filepath.Join(src, "link"))
	store := filepath.Join(dir, "store")
	img := filepath.Join(dir, "img")
	r := run(t, nil, "mkcomposefs", "--digest-store="+store, src, img)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	bigDigest := verity.DigestBytes(big)
	obj, err := os.ReadFile(filepath.Join(store, bigDigest.ObjectPath()))
	if err != nil || !bytes.Equal(obj, big) {
		t.Fatalf("object for sub/big: %v", err)
	}
	objects := run(t, nil, "composefs-info", "objects", img)
	if strings.TrimSpace(objects.stdout) != bigDigest.ObjectPath() {
		t.Fatalf("objects: %q, want only %s (small files are inline)", objects.stdout, bigDigest.ObjectPath())
	}
	missing := run(t, nil, "composefs-info", "--basedir="+store, "missing-objects", img)
	if missing.stdout != "" {
		t.Fatalf("missing-objects with a full store: %q", missing.stdout)
	}
	missing = run(t, nil, "composefs-info", "--basedir="+dir, "missing-objects", img)
	if strings.TrimSpace(missing.stdout) != bigDigest.ObjectPath() {
		t.Fatalf("missing-objects with an empty basedir: %q", missing.stdout)
	}
	ls := run(t, nil, "composefs-info", "ls", img)
	wantLs := "/link\t-> sub/big\n/small\n/sub/\t\n/sub/big\t@ " + bigDigest.ObjectPath() + "\n"
	if ls.stdout != wantLs {
		t.Fatalf("ls:\n%s\nwant:\n%s", ls.stdout, wantLs)
	}
	dg := run(t, nil, "cfs-deploy", "digest", filepath.Join(src, "sub", "big"))
	if !strings.HasPrefix(dg.stdout, "sha256:"+bigDigest.String()+" ") {
		t.Fatalf("digest: %q", dg.stdout)
	}
	mf := run(t, nil, "composefs-info", "measure-file", img)
	data, _ := os.ReadFile(img)
	if strings.TrimSpace(mf.stdout) != verity.DigestBytes(data).String() {
		t.Fatalf("measure-file: %q", mf.stdout)
	}
}

// TestComposefsInfoDumpRoundTrip: dump of an image rebuilt with
// --from-file gives the same image (upstream's second round trip).
func TestComposefsInfoDumpRoundTrip(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	src := filepath.Join(conformance.Dir(t), "special.dump")
	r := run(t, nil, "mkcomposefs", "--min-version=0", "--max-version=0", "--from-file", src, img)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	dump := run(t, nil, "composefs-info", "dump", img)
	img2 := filepath.Join(dir, "img2")
	r = run(t, []byte(dump.stdout), "mkcomposefs", "--min-version=0", "--max-version=0", "--from-file", "-", img2)
	if r.code != 0 {
		t.Fatalf("rebuild exit %d: %s", r.code, r.stderr)
	}
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(img2)
	if !bytes.Equal(a, b) {
		t.Fatal("image -> dump -> image differs")
	}
	filtered := run(t, nil, "composefs-info", "--filter=chardev", "--filter=inline", "--filter=whiteout", "dump", img)
	if n := strings.Count(filtered.stdout, "\n"); n != 4 {
		t.Fatalf("filtered dump has %d lines, upstream prints 4:\n%s", n, filtered.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"mkcomposefs"},
		{"mkcomposefs", "--print-digest-only", "a", "b"},
		{"mkcomposefs", "--bogus", "a", "b"},
		{"composefs-info"},
		{"composefs-info", "frobnicate", "x"},
	} {
		r := run(t, nil, args[0], args[1:]...)
		if r.code == 0 || r.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if r := run(t, nil, "mkcomposefs", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--digest-store") {
		t.Errorf("--help: exit %d, %q", r.code, r.stdout)
	}
}

// TestComposefsDumpGolden: composefs-dump rewrites the image of every
// upstream golden asset byte for byte at its format version, reached as a
// subcommand and through a symlink named composefs-dump (alternately, to
// keep the run short; both ways are used).
func TestComposefsDumpGolden(t *testing.T) {
	if _, err := gobuild.Alias(filepath.Join(bin(t), "cfs-deploy"), "composefs-dump"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, a := range conformance.Assets(t) {
		in := filepath.Join(dir, a.Name+".dump")
		if err := os.WriteFile(in, a.Dump, 0o644); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(dir, a.Name+".img")
		args := []string{"--from-file", in, img}
		if a.Version >= 0 {
			v := strconv.Itoa(a.Version)
			args = append([]string{"--min-version=" + v, "--max-version=" + v}, args...)
		}
		if r := run(t, nil, "mkcomposefs", args...); r.code != 0 {
			t.Fatalf("%s: mkcomposefs: %s", a.Name, r.stderr)
		}
		orig, _ := os.ReadFile(img)
		if sha(orig) != a.SHA256 {
			t.Fatalf("%s: mkcomposefs image differs from upstream's", a.Name)
		}
		out := filepath.Join(dir, a.Name+".out")
		name, args := "composefs-dump", []string{img, out}
		if i%2 == 1 {
			name, args = "cfs-deploy", append([]string{"composefs-dump"}, args...)
		}
		if r := run(t, nil, name, args...); r.code != 0 {
			t.Fatalf("%s: %s %q: exit %d: %s", a.Name, name, args, r.code, r.stderr)
		}
		again, _ := os.ReadFile(out)
		if !bytes.Equal(again, orig) {
			t.Errorf("%s: %s wrote %d bytes (sha256 %s), the image has %d (%s)", a.Name, name, len(again), sha(again), len(orig), a.SHA256)
		}
	}
}
