// Package verity computes and checks fs-verity file digests, the content
// addresses composefs uses for its backing objects.
//
// Only the parameters composefs uses are supported: SHA-256, 4096-byte
// Merkle tree blocks, no salt. With those fixed, the digest computed here is
// byte-for-byte what the kernel reports from FS_IOC_MEASURE_VERITY and what
// `fsverity digest` prints, so a digest can be computed before the file lands
// on a verity-capable filesystem and checked against the kernel afterwards.
package verity

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
)

const (
	blockSize      = 4096
	logBlockSize   = 12
	hashSize       = sha256.Size
	hashesPerBlock = blockSize / hashSize // 128

	// Values of struct fsverity_descriptor and struct fsverity_enable_arg.
	descriptorVersion = 1
	hashAlgSHA256     = 1 // FS_VERITY_HASH_ALG_SHA256
	descriptorSize    = 256
)

// Digest is an fs-verity digest: SHA-256 of the fs-verity descriptor.
type Digest [32]byte

// String returns the digest as 64 lowercase hex characters, the spelling
// used by composefs object names and `fsverity digest --compact`.
func (d Digest) String() string {
	return hex.EncodeToString(d[:])
}

// ObjectPath returns the digest's location in a composefs object store:
// the first byte in hex as a fan-out directory, then the remaining 62 hex
// characters as the file name.
func (d Digest) ObjectPath() string {
	// One allocation: the scanner calls this for every file of a tree.
	var b [2*len(d) + 1]byte
	hex.Encode(b[:2], d[:1])
	b[2] = '/'
	hex.Encode(b[3:], d[1:])
	return string(b[:])
}

// ParseDigest parses 64 hex characters (either case) into a Digest. It is
// the one parser of digests in text: commit records, kernel arguments,
// dump files, object and index names all come through it.
func ParseDigest(s string) (Digest, error) { return parseDigest(s) }

// MarshalText writes the digest as String does, so that JSON records and
// anything else that encodes text spell it as 64 lowercase hex digits.
func (d Digest) MarshalText() ([]byte, error) {
	return hex.AppendEncode(make([]byte, 0, 2*len(d)), d[:]), nil
}

// UnmarshalText parses what MarshalText writes (either case).
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := parseDigest(b)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// IsZero reports whether d is the zero value, which stands for "no
// digest": no content has it.
func (d Digest) IsZero() bool { return d == Digest{} }

func parseDigest[T string | []byte](s T) (Digest, error) {
	var d Digest
	switch {
	case len(s) == 0:
		return d, fmt.Errorf("empty digest, want %d hex digits", 2*len(d))
	case len(s) != 2*len(d):
		return d, fmt.Errorf("digest %q has %d characters, want %d hex digits", shorten(string(s)), len(s), 2*len(d))
	}
	for i := range d {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi < 0 || lo < 0 {
			at := 2 * i
			if hi >= 0 {
				at++
			}
			return Digest{}, fmt.Errorf("digest %q has a non-hex character %q at offset %d", string(s), string(s[at:at+1]), at)
		}
		d[i] = byte(hi<<4 | lo)
	}
	return d, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// shorten keeps error messages readable when someone passes a whole file
// where a digest was expected.
func shorten(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// descriptorDigest hashes the fs-verity descriptor for a file of the given
// size whose Merkle tree root hash is root. This matches struct
// fsverity_descriptor in include/uapi/linux/fsverity.h.
func descriptorDigest(root [hashSize]byte, size uint64) Digest {
	var desc [descriptorSize]byte
	desc[0] = descriptorVersion
	desc[1] = hashAlgSHA256
	desc[2] = logBlockSize
	desc[3] = 0 // salt_size
	// desc[4:8]: reserved, zero.
	binary.LittleEndian.PutUint64(desc[8:16], size)
	copy(desc[16:16+64], root[:]) // root_hash[64], zero-padded
	// desc[80:112] salt and desc[112:256] reserved stay zero.
	return Digest(sha256.Sum256(desc[:]))
}

// rootFromLevel finishes a Merkle tree given the n hashes of one complete
// level (hashes holds exactly n*hashSize bytes). A level with a single hash
// is the top of the tree and that hash is the root; otherwise the hashes are
// packed into zero-padded blocks and hashed to form the next level. The
// slice is overwritten in place: the next level is 128 times shorter, so
// writes never overtake reads.
func rootFromLevel(hashes []byte, n int) [hashSize]byte {
	var root [hashSize]byte
	if n == 0 {
		return root
	}
	var pad [blockSize]byte
	for n > 1 {
		next := 0
		for off := 0; off < n*hashSize; off += blockSize {
			end := min(off+blockSize, n*hashSize)
			var h [hashSize]byte
			if end-off == blockSize {
				h = sha256.Sum256(hashes[off:end])
			} else {
				clear(pad[:])
				copy(pad[:], hashes[off:end])
				h = sha256.Sum256(pad[:])
			}
			copy(hashes[next*hashSize:], h[:])
			next++
		}
		n = next
	}
	copy(root[:], hashes[:hashSize])
	return root
}

// DigestBytes returns the fs-verity digest of b.
func DigestBytes(b []byte) Digest {
	st := getState()
	defer putState(st)
	st.h.Write(b)
	return st.h.Sum()
}

// DigestReader returns the fs-verity digest of everything r yields until
// io.EOF, and the number of bytes read.
func DigestReader(r io.Reader) (Digest, int64, error) {
	st := getState()
	defer putState(st)
	n, err := st.copyFrom(r)
	if err != nil {
		return Digest{}, n, fmt.Errorf("compute fs-verity digest: %w", err)
	}
	return st.h.Sum(), n, nil
}

// DigestPath returns the fs-verity digest of the file at path.
func DigestPath(path string) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Digest{}, fmt.Errorf("compute fs-verity digest: %w", err)
	}
	defer f.Close()
	return DigestFile(f)
}

// readBufSize is large enough to amortise read syscalls and small enough
// to stay in L2 cache between the copy from the page cache and hashing.
const readBufSize = 128 << 10

// state bundles a Hasher with a read buffer so that digesting thousands of
// small files does not allocate per file.
type state struct {
	h   Hasher
	buf []byte
}

var statePool = sync.Pool{New: func() any {
	return &state{buf: make([]byte, readBufSize)}
}}

func getState() *state {
	st := statePool.Get().(*state)
	st.h.Reset()
	return st
}

func putState(st *state) { statePool.Put(st) }

func (st *state) copyFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := r.Read(st.buf)
		st.h.Write(st.buf[:n])
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
