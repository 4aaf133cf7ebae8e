package fstree

import (
	"crypto/sha256"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// The two benchmarks below are read together: Scan with digests against
// the cheapest honest way to look at every byte of the same tree, a
// directory walk feeding plain SHA-256 on GOMAXPROCS workers. Their ratio
// is the scanner's overhead. Run them warm, e.g.
//
//	go test -run NONE -bench GoRoot -benchtime 5x ./internal/fstree

func BenchmarkScanGoRoot(b *testing.B) {
	root := runtime.GOROOT()
	opts := Options{InlineMax: 64, ComputeDigests: true}
	var files, bytes int64
	cpu := cpuTime()
	for b.Loop() {
		n, err := Scan(root, opts)
		if err != nil {
			b.Fatal(err)
		}
		files, bytes = countTree(n)
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(files), "files")
	b.SetBytes(bytes)
}

func BenchmarkFloorWalkSHA256GoRoot(b *testing.B) {
	root := runtime.GOROOT()
	var files, total int64
	cpu := cpuTime()
	for b.Loop() {
		files, total = floorWalkSHA256(b, root)
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(files), "files")
	b.SetBytes(total)
}

// BenchmarkFloorWalkVerityGoRoot is the same walk computing fs-verity
// digests with verity.DigestFile instead of plain SHA-256. fs-verity
// hashes more than the file: the last block of every file is padded to
// 4 KiB, every file of more than one block adds a padded block of
// hashes, and the descriptor is hashed too (on the Go tree about 30% more
// SHA-256 input). The gap between this and the plain floor is that cost;
// the gap between Scan and this is the scanner's own.
func BenchmarkFloorWalkVerityGoRoot(b *testing.B) {
	root := runtime.GOROOT()
	var files, total int64
	cpu := cpuTime()
	for b.Loop() {
		files, total = floorWalk(b, root, func(f *os.File, _ []byte, _ hash.Hash) (int64, error) {
			if _, err := verity.DigestFile(f); err != nil {
				return 0, err
			}
			fi, err := f.Stat()
			if err != nil {
				return 0, err
			}
			return fi.Size(), nil
		})
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(files), "files")
	b.SetBytes(total)
}

func floorWalkSHA256(b *testing.B, root string) (files, total int64) {
	return floorWalk(b, root, func(f *os.File, buf []byte, h hash.Hash) (int64, error) {
		h.Reset()
		var n int64
		for {
			c, err := f.Read(buf)
			h.Write(buf[:c])
			n += int64(c)
			if err == io.EOF {
				h.Sum(buf[:0])
				return n, nil
			}
			if err != nil {
				return n, err
			}
		}
	})
}

// floorWalk walks root with filepath.WalkDir and runs hashFile on every
// regular file on GOMAXPROCS workers.
func floorWalk(b *testing.B, root string, hashFile func(f *os.File, buf []byte, h hash.Hash) (int64, error)) (files, total int64) {
	paths := make(chan string, 1024)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 128<<10)
			h := sha256.New()
			var n int64
			for p := range paths {
				f, err := os.Open(p)
				if err != nil {
					b.Error(err)
					continue
				}
				c, err := hashFile(f, buf, h)
				f.Close()
				if err != nil {
					b.Error(err)
				}
				n += c
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files++
			paths <- p
		}
		return nil
	})
	close(paths)
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	return files, total
}

// countTree returns the number of entries under n and the bytes of its
// regular files.
func countTree(n *erofs.Node) (files, bytes int64) {
	erofs.Walk(n, func(n *erofs.Node) error {
		files++
		if n.IsRegular() && n.LinkTo == nil {
			bytes += int64(n.Size)
		}
		return nil
	})
	return files, bytes
}

// cpuTime is the process's user and system time so far. Other programs
// on a busy machine stretch the wall time of a benchmark; its CPU time
// (per op, for this process) stays comparable.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
