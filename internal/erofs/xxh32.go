package erofs

import "math/bits"

// xxh32 is the 32-bit xxHash that EROFS uses for its per-inode xattr name
// bloom filter. The kernel computes it when looking up xattrs, so the
// writer must produce exactly the standard function.
func xxh32(b []byte, seed uint32) uint32 {
	const (
		p1 = 0x9E3779B1
		p2 = 0x85EBCA77
		p3 = 0xC2B2AE3D
		p4 = 0x27D4EB2F
		p5 = 0x165667B1
	)
	round := func(acc, lane uint32) uint32 {
		return bits.RotateLeft32(acc+lane*p2, 13) * p1
	}
	n := len(b)
	var h uint32
	if n >= 16 {
		v1, v2, v3, v4 := seed+p1+p2, seed+p2, seed, seed-p1
		for len(b) >= 16 {
			v1 = round(v1, le.Uint32(b[0:]))
			v2 = round(v2, le.Uint32(b[4:]))
			v3 = round(v3, le.Uint32(b[8:]))
			v4 = round(v4, le.Uint32(b[12:]))
			b = b[16:]
		}
		h = bits.RotateLeft32(v1, 1) + bits.RotateLeft32(v2, 7) +
			bits.RotateLeft32(v3, 12) + bits.RotateLeft32(v4, 18)
	} else {
		h = seed + p5
	}
	h += uint32(n)
	for len(b) >= 4 {
		h = bits.RotateLeft32(h+le.Uint32(b)*p3, 17) * p4
		b = b[4:]
	}
	for _, c := range b {
		h = bits.RotateLeft32(h+uint32(c)*p5, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}
