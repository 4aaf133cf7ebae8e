package repo

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/fstree"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// fileCache is the repository's memory of file digests across directory
// commits: (device, inode, size, mtime, ctime) -> fs-verity digest. It is
// only a cache: a missing, stale or damaged file just means files are read
// again, and the scanner only trusts an entry whose object is present.
//
// File format: the magic line, a record count (u64), records of 72 bytes
// (dev, ino, size, mtime ns, ctime ns as little-endian 64-bit values, then
// the 32-byte digest), and the sha256 of everything before it, so that a
// file torn by a crash is recognised and ignored.
type fileCache struct {
	path string
	mu   sync.Mutex
	old  map[fstree.FileKey]verity.Digest
	used map[fstree.FileKey]verity.Digest
	// learned is set when this commit read a file the cache did not know.
	learned bool
}

const (
	fileCacheName   = "files"
	fileCacheMagic  = "cfs-deploy file digest cache v1\n"
	fileCacheRecord = 5*8 + 32
	// Beyond this many entries only those of the latest commit are kept.
	fileCacheMax = 4 << 20
)

func (r *Repo) loadFileCache() *fileCache {
	c := &fileCache{
		path: filepath.Join(r.Path, cacheDir, fileCacheName),
		old:  map[fstree.FileKey]verity.Digest{},
		used: map[fstree.FileKey]verity.Digest{},
	}
	data, err := os.ReadFile(c.path)
	if err == nil {
		c.old, err = decodeFileCache(data)
		if err != nil {
			c.old = map[fstree.FileKey]verity.Digest{}
		}
	}
	return c
}

func decodeFileCache(data []byte) (map[fstree.FileKey]verity.Digest, error) {
	head := len(fileCacheMagic) + 8
	if len(data) < head+sha256.Size || !bytes.HasPrefix(data, []byte(fileCacheMagic)) {
		return nil, errors.New("not a file digest cache")
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, errors.New("checksum mismatch")
	}
	n := binary.LittleEndian.Uint64(body[len(fileCacheMagic):])
	recs := body[head:]
	if uint64(len(recs)) != n*fileCacheRecord {
		return nil, fmt.Errorf("%d bytes of records for %d entries", len(recs), n)
	}
	m := make(map[fstree.FileKey]verity.Digest, n)
	for len(recs) > 0 {
		var k fstree.FileKey
		k.Dev = binary.LittleEndian.Uint64(recs[0:])
		k.Ino = binary.LittleEndian.Uint64(recs[8:])
		k.Size = int64(binary.LittleEndian.Uint64(recs[16:]))
		k.Mtime = int64(binary.LittleEndian.Uint64(recs[24:]))
		k.Ctime = int64(binary.LittleEndian.Uint64(recs[32:]))
		var d verity.Digest
		copy(d[:], recs[40:72])
		m[k] = d
		recs = recs[fileCacheRecord:]
	}
	return m, nil
}

func (c *fileCache) Lookup(k fstree.FileKey) (verity.Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.old[k]
	if ok {
		c.used[k] = d
	}
	return d, ok
}

func (c *fileCache) Store(k fstree.FileKey, d verity.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.used[k] = d
	c.learned = true
}

// save writes the cache back: the entries this commit used or learned,
// plus the older ones while the total stays reasonable.
func (c *fileCache) save() error {
	if !c.learned {
		// Nothing new: the file on disk already holds every entry used.
		return nil
	}
	all := c.used
	if len(c.old)+len(c.used) <= fileCacheMax {
		all = make(map[fstree.FileKey]verity.Digest, len(c.old)+len(c.used))
		for k, d := range c.old {
			all[k] = d
		}
		for k, d := range c.used {
			all[k] = d
		}
	}
	var b bytes.Buffer
	b.Grow(len(fileCacheMagic) + 8 + len(all)*fileCacheRecord + sha256.Size)
	b.WriteString(fileCacheMagic)
	var rec [fileCacheRecord]byte
	binary.LittleEndian.PutUint64(rec[:8], uint64(len(all)))
	b.Write(rec[:8])
	for k, d := range all {
		binary.LittleEndian.PutUint64(rec[0:], k.Dev)
		binary.LittleEndian.PutUint64(rec[8:], k.Ino)
		binary.LittleEndian.PutUint64(rec[16:], uint64(k.Size))
		binary.LittleEndian.PutUint64(rec[24:], uint64(k.Mtime))
		binary.LittleEndian.PutUint64(rec[32:], uint64(k.Ctime))
		copy(rec[40:], d[:])
		b.Write(rec[:])
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(c.path, b.Bytes(), 0o644)
}
