package fstree

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

type mapCache struct {
	mu      sync.Mutex
	m       map[FileKey]verity.Digest
	lookups int
}

func (c *mapCache) Lookup(k FileKey) (verity.Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	d, ok := c.m[k]
	return d, ok
}

func (c *mapCache) Store(k FileKey, d verity.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = d
}

// TestCacheSkipsUnchangedFiles: a second scan with the cache reads no file
// content, yet yields the same digests; a changed file is read again.
func TestCacheSkipsUnchangedFiles(t *testing.T) {
	old, oldCoarse := racyWindow, racyWindowCoarse
	racyWindow, racyWindowCoarse = 0, 0
	t.Cleanup(func() { racyWindow, racyWindowCoarse = old, oldCoarse })

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	for i, name := range []string{"a", "b", "d/c"} {
		os.WriteFile(filepath.Join(src, name), bytes.Repeat([]byte{byte('a' + i)}, 5000+i), 0o644)
	}
	st, err := objstore.Open(filepath.Join(dir, "store"), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cache := &mapCache{m: map[FileKey]verity.Digest{}}
	scan := func() (*erofs.Node, int64) {
		var hashed int64
		opts := DefaultOptions()
		opts.Store, opts.Cache = st, cache
		opts.Progress = func(_, b int64) { hashed = b }
		root, err := Scan(src, opts)
		if err != nil {
			t.Fatal(err)
		}
		return root, hashed
	}
	first, hashed := scan()
	if hashed != 5000+5001+5002 || len(cache.m) != 3 {
		t.Fatalf("first scan hashed %d bytes, cached %d files", hashed, len(cache.m))
	}
	second, hashed := scan()
	if hashed != 0 {
		t.Fatalf("second scan of an unchanged tree read %d bytes", hashed)
	}
	for _, p := range []string{"a", "b", "d/c"} {
		x, _ := erofs.Resolve(first, p)
		y, _ := erofs.Resolve(second, p)
		if x.Digest != y.Digest || x.Payload != y.Payload {
			t.Errorf("%s: digest from the cache differs", p)
		}
	}
	os.WriteFile(filepath.Join(src, "b"), bytes.Repeat([]byte{'z'}, 5001), 0o644)
	third, hashed := scan()
	if hashed != 5001 {
		t.Fatalf("after changing one file the scan read %d bytes, want 5001", hashed)
	}
	b, _ := erofs.Resolve(third, "b")
	if want := verity.DigestBytes(bytes.Repeat([]byte{'z'}, 5001)); b.Digest != want {
		t.Fatal("changed file has a stale digest")
	}
}

// TestCacheableWindow: recently changed files are not remembered, with a
// longer window for whole-second timestamps.
func TestCacheableWindow(t *testing.T) {
	s := &scanner{started: time.Unix(1000, 0)}
	at := func(sec, nsec int64) FileKey {
		ns := sec*1e9 + nsec
		return FileKey{Mtime: ns, Ctime: ns}
	}
	for _, tc := range []struct {
		k    FileKey
		want bool
	}{
		{at(999, 900_000_000), true},  // 100 ms before, fine-grained
		{at(999, 990_000_000), false}, // 10 ms before: same tick is possible
		{at(999, 0), false},           // whole seconds: 1 s is within 2 s
		{at(997, 0), true},
		{at(1001, 5), false}, // after the scan started
	} {
		if got := s.cacheable(tc.k); got != tc.want {
			t.Errorf("cacheable(%+v) = %v, want %v", tc.k, got, tc.want)
		}
	}
}
