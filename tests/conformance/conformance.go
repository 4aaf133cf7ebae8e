// Package conformance finds upstream composefs's golden assets, which live
// outside the repository in ../shared/conformance/upstream (beside the
// module root): dump files, the sha256 of the image upstream mkcomposefs
// writes from each, and the format version some are pinned to.
//
// A clone without ../shared still runs every other test: the tests that
// need the assets are skipped with a message saying where they were
// looked for. Under CI (CI=true) their absence fails the test instead, so
// that a CI run cannot pass without the conformance checks.
package conformance

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// Asset is one golden asset.
type Asset struct {
	Name   string // file name of the dump, e.g. "config.dump.gz"
	Path   string
	Dump   []byte // decompressed
	SHA256 string // of the image upstream writes from Dump
	// Version is the format version the image is pinned to (the asset's
	// .version file), -1 when it has none and the defaults apply.
	Version int
	// Strict: upstream's own test parses the asset with CFS_PARSE_STRICT.
	Strict bool
}

// nonStrict are parsed without upstream's CFS_PARSE_STRICT rules, as
// upstream's own test does.
var nonStrict = map[string]bool{
	"no-newline.dump":                      true,
	"longlink.dump":                        true,
	"honggfuzz-longlink-unterminated.dump": true,
}

// Strict reports whether upstream's own test parses the named dump with
// CFS_PARSE_STRICT.
func Strict(name string) bool { return !nonStrict[name] }

// Dir returns the assets' directory; see the package comment for what
// happens when it is missing.
func Dir(t testing.TB) string {
	t.Helper()
	root, err := gobuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "..", "shared", "conformance", "upstream")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		msg := "upstream composefs conformance assets not found at " + dir +
			" (../shared beside the clone); the conformance checks did not run"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// Assets loads every asset that has an upstream image sha256.
func Assets(t testing.TB) []Asset {
	t.Helper()
	dir := Dir(t)
	sums, err := filepath.Glob(filepath.Join(dir, "*.sha256"))
	if err != nil || len(sums) == 0 {
		t.Fatalf("no conformance assets in %s (%v)", dir, err)
	}
	var assets []Asset
	for _, sumPath := range sums {
		path := strings.TrimSuffix(sumPath, ".sha256")
		name := filepath.Base(path)
		want, err := os.ReadFile(sumPath)
		if err != nil {
			t.Fatal(err)
		}
		dump, err := ReadMaybeGzip(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // upstream ships some orphan .sha256 files
		}
		if err != nil {
			t.Fatal(err)
		}
		a := Asset{Name: name, Path: path, Dump: dump, SHA256: strings.TrimSpace(string(want)),
			Version: -1, Strict: !nonStrict[name]}
		if v, err := os.ReadFile(path + ".version"); err == nil {
			if a.Version, err = strconv.Atoi(strings.TrimSpace(string(v))); err != nil {
				t.Fatalf("%s.version: %v", name, err)
			}
		}
		assets = append(assets, a)
	}
	return assets
}

// ReadMaybeGzip reads a file, decompressing it if its name ends in .gz.
func ReadMaybeGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	return io.ReadAll(r)
}
