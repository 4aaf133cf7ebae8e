// Command floor is the physical limit the digest benchmarks compare with:
// walk a tree and SHA-256 every byte of every regular file on all cores,
// and nothing else (no xattrs, no fs-verity tree, no image).
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: floor DIR")
		os.Exit(2)
	}
	paths := make(chan string, 1024)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 128<<10)
			h := sha256.New()
			var n int64
			for p := range paths {
				f, err := os.Open(p)
				if err != nil {
					continue
				}
				h.Reset()
				k, _ := io.CopyBuffer(h, f, buf)
				f.Close()
				n += k
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	filepath.WalkDir(os.Args[1], func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths <- p
		}
		return nil
	})
	close(paths)
	wg.Wait()
	fmt.Println(total)
}
