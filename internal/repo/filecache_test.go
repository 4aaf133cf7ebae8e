package repo

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/fstree"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// TestCommitDirReusesDigests: committing an unchanged tree again reads no
// file content; a changed file is read and gets its new digest.
func TestCommitDirReusesDigests(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{"a", "b"} {
		p := filepath.Join(src, n)
		os.WriteFile(p, bytes.Repeat([]byte(n), 10000), 0o644)
		os.Chtimes(p, old, old)
	}
	// ctime cannot be set back; wait out the scanner's racy window.
	time.Sleep(100 * time.Millisecond)
	if err := Init(filepath.Join(dir, "repo"), InitOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(filepath.Join(dir, "repo"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	commit := func() (*CommitResult, int64) {
		var read int64
		res, err := r.CommitDir(src, CommitOptions{Branch: "b", Progress: func(_, b int64) { read = b }})
		if err != nil {
			t.Fatal(err)
		}
		return res, read
	}
	first, read := commit()
	if read != 20000 {
		t.Fatalf("first commit read %d bytes, want 20000", read)
	}
	second, read := commit()
	if read != 0 {
		t.Fatalf("second commit of an unchanged tree read %d bytes", read)
	}
	if first.Image != second.Image {
		t.Fatal("cached digests changed the image")
	}
	os.WriteFile(filepath.Join(src, "b"), bytes.Repeat([]byte("c"), 10000), 0o644)
	third, read := commit()
	if read != 10000 {
		t.Fatalf("after changing one file the commit read %d bytes, want 10000", read)
	}
	_, root, err := r.CommitTree(third.ID)
	if err != nil {
		t.Fatal(err)
	}
	f := root.Lookup("b")
	want := verity.DigestBytes(bytes.Repeat([]byte("c"), 10000))
	if f.Digest != want {
		t.Fatal("the changed file kept a stale digest")
	}
}

// TestFileCacheIgnoresDamage: a torn or corrupted cache file is ignored
// rather than trusted.
func TestFileCacheIgnoresDamage(t *testing.T) {
	dir := t.TempDir()
	c := &fileCache{path: filepath.Join(dir, "files"), old: map[fstree.FileKey]verity.Digest{},
		used: map[fstree.FileKey]verity.Digest{{Dev: 1, Ino: 2, Size: 3, Mtime: 4, Ctime: 5}: {9}}, learned: true}
	if err := c.save(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(c.path)
	m, err := decodeFileCache(data)
	if err != nil || len(m) != 1 || m[fstree.FileKey{Dev: 1, Ino: 2, Size: 3, Mtime: 4, Ctime: 5}] != (verity.Digest{9}) {
		t.Fatalf("round trip: %v %v", m, err)
	}
	for _, bad := range [][]byte{data[:len(data)-1], append([]byte{}, data[:len(data)/2]...), nil} {
		if _, err := decodeFileCache(bad); err == nil {
			t.Errorf("damaged cache (%d bytes) accepted", len(bad))
		}
	}
	flipped := append([]byte{}, data...)
	flipped[len(fileCacheMagic)+10] ^= 1
	if _, err := decodeFileCache(flipped); err == nil {
		t.Error("cache with a flipped bit accepted")
	}
}
