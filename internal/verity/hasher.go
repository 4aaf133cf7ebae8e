package verity

import "crypto/sha256"

// Hasher computes an fs-verity digest from a stream of writes.
//
// It keeps one partially filled block per Merkle tree level instead of the
// whole tree, so memory grows with the tree depth (one 4 KiB block per
// level, 8 levels for an exabyte) rather than with the input size.
//
// The zero value is ready to use.
type Hasher struct {
	data [blockSize]byte // partial data block
	n    int             // bytes used in data
	size uint64

	// levels[i] collects the hashes of level i: i=0 holds hashes of data
	// blocks, i=1 hashes of level-0 blocks, and so on. A level block is
	// hashed into the level above as soon as it is full; whether a level
	// is the top of the tree is only known in Sum.
	levels []*levelBlock
}

type levelBlock struct {
	buf [blockSize]byte
	n   int // bytes used in buf; always < blockSize between calls
}

// NewHasher returns a Hasher ready for writing.
func NewHasher() *Hasher { return new(Hasher) }

// Reset discards all input, keeping allocated level blocks for reuse.
func (h *Hasher) Reset() {
	h.n = 0
	h.size = 0
	for _, l := range h.levels {
		l.n = 0
	}
	h.levels = h.levels[:0]
}

// Write adds p to the input. It never returns an error.
func (h *Hasher) Write(p []byte) (int, error) {
	written := len(p)
	h.size += uint64(written)

	if h.n > 0 {
		c := copy(h.data[h.n:], p)
		h.n += c
		p = p[c:]
		if h.n < blockSize {
			return written, nil
		}
		h.push(0, sha256.Sum256(h.data[:]))
		h.n = 0
	}
	// Hash whole blocks straight from the caller's buffer: no copy.
	for len(p) >= blockSize {
		h.push(0, sha256.Sum256(p[:blockSize]))
		p = p[blockSize:]
	}
	h.n = copy(h.data[:], p)
	return written, nil
}

// push appends hash to level i, carrying full blocks upward.
func (h *Hasher) push(i int, hash [hashSize]byte) {
	for {
		if i == len(h.levels) {
			if i < cap(h.levels) && h.levels[:i+1][i] != nil {
				h.levels = h.levels[:i+1] // reuse a block kept by Reset
			} else {
				h.levels = append(h.levels, new(levelBlock))
			}
		}
		l := h.levels[i]
		copy(l.buf[l.n:], hash[:])
		l.n += hashSize
		if l.n < blockSize {
			return
		}
		hash = sha256.Sum256(l.buf[:])
		l.n = 0
		i++
	}
}

// Size returns the number of bytes written so far.
func (h *Hasher) Size() uint64 { return h.size }

// Sum returns the fs-verity digest of the data written so far. It does not
// change the Hasher's state, so writing may continue afterwards.
func (h *Hasher) Sum() Digest {
	var root [hashSize]byte
	if h.size > 0 {
		root = h.root()
	}
	return descriptorDigest(root, h.size)
}

// root folds the pending partial blocks bottom-up. carry is the hash of the
// partial block one level below, which belongs after the hashes already
// stored at the current level.
func (h *Hasher) root() [hashSize]byte {
	var (
		carry    [hashSize]byte
		hasCarry bool
		blk      [blockSize]byte
	)
	if h.n > 0 {
		copy(blk[:], h.data[:h.n])
		carry = sha256.Sum256(blk[:])
		hasCarry = true
	}
	for i, l := range h.levels {
		count := l.n / hashSize
		if hasCarry {
			count++
		}
		if i == len(h.levels)-1 && count == 1 {
			// A single hash at the highest level is the root itself,
			// e.g. a one-block file's root is its data block hash.
			if hasCarry {
				return carry
			}
			var r [hashSize]byte
			copy(r[:], l.buf[:hashSize])
			return r
		}
		if count == 0 {
			continue
		}
		clear(blk[:])
		copy(blk[:], l.buf[:l.n])
		if hasCarry {
			copy(blk[l.n:], carry[:])
		}
		carry = sha256.Sum256(blk[:])
		hasCarry = true
	}
	// Only reached when the top level held several hashes (or there were
	// no levels at all); the last block hashed is the root.
	return carry
}
