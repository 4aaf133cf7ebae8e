package verity

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	// chunkSize is the data covered by one full block of data-block
	// hashes: 128 blocks × 4 KiB. Splitting work on multiples of it lets
	// every worker emit finished level-1 hashes, so merging the workers'
	// results needs only a few KiB instead of size/128 bytes.
	chunkSize = hashesPerBlock * blockSize // 512 KiB

	// segmentSize is one unit of parallel work and one pread. Big enough
	// to amortise the syscall, small enough that the copied data is still
	// in cache when hashed and that cores finish close together.
	segmentSize = 2 * chunkSize

	// parallelThreshold is the size above which starting goroutines pays
	// off; below it one core hashes the file in a few milliseconds.
	parallelThreshold = 4 << 20
)

var segmentPool = sync.Pool{New: func() any {
	b := make([]byte, segmentSize)
	return &b
}}

// DigestFile returns the fs-verity digest of the whole of f, independent
// of its current offset (reads use ReadAt and do not move it). Large files
// are hashed on all cores. f must not be written to meanwhile; a size
// change that is noticed is reported as an error.
func DigestFile(f *os.File) (Digest, error) {
	fi, err := f.Stat()
	if err != nil {
		return Digest{}, fmt.Errorf("compute fs-verity digest: %w", err)
	}
	if !fi.Mode().IsRegular() {
		// Pipes and the like cannot ReadAt; hash what can be read.
		d, _, err := DigestReader(f)
		if err != nil {
			return Digest{}, fmt.Errorf("compute fs-verity digest of %s: %w", f.Name(), err)
		}
		return d, nil
	}
	size := fi.Size()
	workers := runtime.GOMAXPROCS(0)
	if size <= parallelThreshold || workers == 1 {
		return digestFileSerial(f)
	}
	return digestFileParallel(f, size, workers)
}

func digestFileSerial(f *os.File) (Digest, error) {
	st := getState()
	defer putState(st)
	var off int64
	for {
		n, err := f.ReadAt(st.buf, off)
		st.h.Write(st.buf[:n])
		off += int64(n)
		if err == io.EOF {
			return st.h.Sum(), nil
		}
		if err != nil {
			return Digest{}, fmt.Errorf("compute fs-verity digest of %s: %w", f.Name(), err)
		}
	}
}

func digestFileParallel(f *os.File, size int64, workers int) (Digest, error) {
	nblocks := (size + blockSize - 1) / blockSize
	nchunks := int((nblocks + hashesPerBlock - 1) / hashesPerBlock)
	nsegments := (size + segmentSize - 1) / segmentSize
	workers = int(min(int64(workers), nsegments))

	// level1[i] is the hash of the block of data-block hashes of chunk i.
	// Workers write disjoint entries, so no locking is needed.
	level1 := make([]byte, nchunks*hashSize)

	var (
		next     atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failed.Store(true)
	}
	for range workers {
		wg.Go(func() {
			bp := segmentPool.Get().(*[]byte)
			defer segmentPool.Put(bp)
			for !failed.Load() {
				seg := next.Add(1) - 1
				if seg >= nsegments {
					return
				}
				off := seg * segmentSize
				n := int(min(segmentSize, size-off))
				if err := readFull(f, (*bp)[:n], off); err != nil {
					fail(err)
					return
				}
				hashSegment((*bp)[:n], level1[int(off/chunkSize)*hashSize:])
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return Digest{}, fmt.Errorf("compute fs-verity digest of %s: %w", f.Name(), firstErr)
	}
	// The size came from Stat; make sure nothing was appended since, so
	// the result means the same as the serial path's read-to-EOF.
	var probe [1]byte
	if n, _ := f.ReadAt(probe[:], size); n != 0 {
		return Digest{}, fmt.Errorf("compute fs-verity digest of %s: %w", f.Name(), errFileChanged)
	}
	return descriptorDigest(rootFromLevel(level1, nchunks), uint64(size)), nil
}

var errFileChanged = errors.New("file size changed while hashing")

func readFull(f *os.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF || err == nil {
		return errFileChanged
	}
	return err
}

// hashSegment hashes data, which starts on a chunk boundary, and writes one
// level-1 hash per chunk to out. Only the file's last segment may end in a
// partial chunk or partial block; both are zero-padded as fs-verity requires.
func hashSegment(data []byte, out []byte) {
	var hashes [blockSize]byte
	var last [blockSize]byte
	for len(data) > 0 {
		chunk := data[:min(chunkSize, len(data))]
		data = data[len(chunk):]
		j := 0
		for ; len(chunk) >= blockSize; j++ {
			h := sha256.Sum256(chunk[:blockSize])
			copy(hashes[j*hashSize:], h[:])
			chunk = chunk[blockSize:]
		}
		if len(chunk) > 0 {
			clear(last[:])
			copy(last[:], chunk)
			h := sha256.Sum256(last[:])
			copy(hashes[j*hashSize:], h[:])
			j++
		}
		clear(hashes[j*hashSize:])
		h := sha256.Sum256(hashes[:])
		out = out[copy(out, h[:]):]
	}
}
