package verity

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

const benchSize = 256 << 20

var bench struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// benchFile creates the 256 MiB input once per test binary run: benchmark
// functions are invoked several times while b.N is calibrated.
func benchFile(b *testing.B) string {
	bench.once.Do(func() {
		bench.dir, bench.err = os.MkdirTemp("", "verity-bench")
		if bench.err != nil {
			return
		}
		bench.path = filepath.Join(bench.dir, "data")
		bench.err = os.WriteFile(bench.path, pseudoRandom(benchSize, 1), 0o644)
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench.dir != "" {
		os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

func openBench(b *testing.B) *os.File {
	f, err := os.Open(benchFile(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkDigestFile hashes a 256 MiB file (warm page cache) on all cores.
func BenchmarkDigestFile(b *testing.B) {
	f := openBench(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, err := DigestFile(f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256Floor is the lower bound for BenchmarkDigestFile: one
// plain SHA-256 per core over a contiguous 1/GOMAXPROCS of the same file,
// read with the same pread size. The ratio of the two shows the cost of the
// Merkle tree (65 compressions per 64 data blocks, plus 1/128 for the
// upper levels) and of the scheduling.
func BenchmarkSHA256Floor(b *testing.B) {
	f := openBench(b)
	workers := runtime.GOMAXPROCS(0)
	part := int64(benchSize / workers)
	b.SetBytes(benchSize)
	for b.Loop() {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				buf := make([]byte, segmentSize)
				h := sha256.New()
				off, end := int64(w)*part, int64(w+1)*part
				if w == workers-1 {
					end = benchSize
				}
				for off < end {
					n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
					if err != nil {
						b.Error(err)
						return
					}
					h.Write(buf[:n])
					off += int64(n)
				}
				h.Sum(nil)
			})
		}
		wg.Wait()
	}
}

// BenchmarkDigestBytes is single-core, in-memory throughput.
func BenchmarkDigestBytes(b *testing.B) {
	data := pseudoRandom(16<<20, 2)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		DigestBytes(data)
	}
}

// BenchmarkDigestFileSmall models the typical composefs object: many
// small files, each digested on its own.
func BenchmarkDigestFileSmall(b *testing.B) {
	data := pseudoRandom(16<<10, 3)
	p := filepath.Join(b.TempDir(), "small")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DigestFile(f); err != nil {
			b.Fatal(err)
		}
	}
}
