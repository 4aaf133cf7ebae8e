package erofs

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// rdPrefixes maps e_name_index to its name prefix when reading. Unlike
// the writer's table it knows "lustre.", which composefs never writes.
var rdPrefixes = [...]string{
	xattrIndexNone:          "",
	xattrIndexUser:          "user.",
	xattrIndexPosixACLAcces: xattrACLAccess,
	xattrIndexPosixACLDef:   xattrACLDefault,
	xattrIndexTrusted:       "trusted.",
	xattrIndexLustre:        "lustre.",
	xattrIndexSecurity:      "security.",
}

// maxReadXattrBudget bounds the xattrs of one node the way upstream's
// reader does: the sum of (7 + len(key) + len(value)) plus 12.
const maxReadXattrBudget = 65535

// rdShared is a decoded entry of the shared xattr area.
type rdShared struct {
	key, value string
}

// rdXattrSet collects a node's xattrs; a repeated name replaces the value
// in place, as upstream's set_xattr does.
type rdXattrSet struct {
	list   []Xattr
	index  map[string]int
	budget int
}

func (s *rdXattrSet) set(key, value string) {
	if s.index == nil && len(s.list) >= 8 {
		s.index = make(map[string]int, 2*len(s.list))
		for i, x := range s.list {
			s.index[x.Key] = i
		}
	}
	if s.index != nil {
		if i, ok := s.index[key]; ok {
			s.list[i].Value = value
			return
		}
		s.index[key] = len(s.list)
	} else {
		for i := range s.list {
			if s.list[i].Key == key {
				s.list[i].Value = value
				return
			}
		}
	}
	s.list = append(s.list, Xattr{Key: key, Value: value})
}

// readXattrs decodes the xattr ibody of ino and applies it to n: inline
// entries first in stored order, then the shared ones in stored order.
func (r *imgReader) readXattrs(w rdWhere, ino *rdInode, n *Node) *FormatError {
	if ino.icount == 0 {
		return nil
	}
	base := ino.off + ino.isize
	area := r.img[base:ino.bodyEnd()] // bounds checked by readInode
	nShared := int(area[4])
	p := xattrIbodyHeaderSize + nShared*4
	if p > len(area) {
		return w.fail(base+4, ErrCorrupt, "%d shared xattr ids run past the end of the %d byte xattr area", nShared, len(area))
	}
	var xs rdXattrSet
	for p < len(area) {
		if len(area)-p < xattrEntryHeaderSize {
			return w.fail(base+uint64(p), ErrCorrupt, "xattr entry header runs past end of inode")
		}
		nameLen := int(area[p])
		index := area[p+1]
		valueLen := int(le.Uint16(area[p+2:]))
		size := int(roundUp(uint64(xattrEntryHeaderSize+nameLen+valueLen), 4))
		if size > len(area)-p {
			return w.fail(base+uint64(p), ErrCorrupt, "xattr entry runs past end of inode (%d bytes, %d left)", size, len(area)-p)
		}
		nameStart := p + xattrEntryHeaderSize
		key, err := r.xattrName(w, base+uint64(p), index, area[nameStart:nameStart+nameLen])
		if err != nil {
			return err
		}
		value := area[nameStart+nameLen : nameStart+nameLen+valueLen]
		if err := r.charge(w, base+uint64(p), len(value)); err != nil {
			return err
		}
		if err := r.applyXattr(w, base+uint64(p), n, &xs, key, string(value)); err != nil {
			return err
		}
		p += size
	}
	for i := 0; i < nShared; i++ {
		idOff := base + xattrIbodyHeaderSize + uint64(i)*4
		id := le.Uint32(area[xattrIbodyHeaderSize+i*4:])
		x, err := r.sharedEntry(w, idOff, id)
		if err != nil {
			return err
		}
		if err := r.applyXattr(w, idOff, n, &xs, x.key, x.value); err != nil {
			return err
		}
	}
	n.Xattrs = xs.list
	return nil
}

// sharedEntry decodes (once) the shared entry with the given id.
func (r *imgReader) sharedEntry(w rdWhere, idOff uint64, id uint32) (rdShared, *FormatError) {
	if x, ok := r.shared[id]; ok {
		return x, nil
	}
	off := r.xattrBase + uint64(id)*4
	h, err := r.span(w, off, xattrEntryHeaderSize, "shared xattr entry "+strconv.FormatUint(uint64(id), 10))
	if err != nil {
		return rdShared{}, err
	}
	nameLen, index, valueLen := uint64(h[0]), h[1], uint64(le.Uint16(h[2:]))
	body, err := r.span(w, off+xattrEntryHeaderSize, nameLen+valueLen, "shared xattr entry "+strconv.FormatUint(uint64(id), 10))
	if err != nil {
		return rdShared{}, err
	}
	key, err := r.xattrName(w, off, index, body[:nameLen])
	if err != nil {
		return rdShared{}, err
	}
	if err := r.charge(w, off, int(valueLen)); err != nil {
		return rdShared{}, err
	}
	x := rdShared{key: key, value: string(body[nameLen:])}
	r.shared[id] = x
	return x, nil
}

// xattrName rebuilds the full name of an entry from its prefix index and
// suffix; names are interned.
func (r *imgReader) xattrName(w rdWhere, off uint64, index uint8, suffix []byte) (string, *FormatError) {
	if index&xattrLongPrefixFlag != 0 {
		return "", w.fail(off+1, ErrUnsupported, "unsupported feature: xattr with long name prefix %d", index&^xattrLongPrefixFlag)
	}
	if int(index) >= len(rdPrefixes) {
		return "", w.fail(off+1, ErrUnsupported, "unknown xattr name index %d", index)
	}
	if i := bytes.IndexByte(suffix, 0); i >= 0 {
		return "", w.fail(off, ErrCorrupt, "xattr name %q contains a NUL byte", suffix)
	}
	r.keyBuf = append(append(r.keyBuf[:0], rdPrefixes[index]...), suffix...)
	if len(r.keyBuf) == 0 {
		return "", w.fail(off, ErrCorrupt, "empty xattr name")
	}
	if len(r.keyBuf) > MaxXattrNameLen {
		return "", w.fail(off, ErrCorrupt, "xattr name of %d bytes is longer than %d", len(r.keyBuf), MaxXattrNameLen)
	}
	if k, ok := r.keys[string(r.keyBuf)]; ok {
		return k, nil
	}
	if err := r.charge(w, off, len(r.keyBuf)); err != nil {
		return "", err
	}
	k := string(r.keyBuf)
	r.keys[k] = k
	return k, nil
}

// applyXattr interprets one xattr the way upstream's reader does: the
// overlayfs xattrs a writer adds become node fields or are dropped, and
// escaped ones are unescaped. n's type may change (whiteouts), which
// affects the entries that follow.
func (r *imgReader) applyXattr(w rdWhere, off uint64, n *Node, xs *rdXattrSet, key, value string) *FormatError {
	switch {
	case key == xattrRedirect:
		if n.IsRegular() {
			if len(value) > 1 && value[0] == '/' {
				value = value[1:]
			}
			if strings.IndexByte(value, 0) >= 0 {
				return w.fail(off, ErrCorrupt, "redirect xattr contains a NUL byte")
			}
			n.Payload = value
		}
		return nil
	case key == xattrMetacopy:
		if n.IsRegular() && len(value) == metacopySize {
			if value[0] != 0 || value[1] != metacopySize || value[2] != 0 || value[3] != metacopyHashSHA256 {
				return w.fail(off, ErrCorrupt, "metacopy xattr header % x, want 00 24 00 01", value[:4])
			}
			copy(n.Digest[:], value[4:])
			if n.Digest.IsZero() {
				// The tree model reads the zero digest as "none";
				// no content has it, so no writer puts it here.
				return w.fail(off, ErrCorrupt, "metacopy xattr holds an all-zero digest")
			}
		}
		return nil
	case key == xattrEscWhiteout && n.IsRegular():
		// An escaped whiteout: the input had a chardev 0/0 here.
		n.Mode = ModeChr | n.Mode&^ModeTypeMask
		n.Rdev = 0
		n.Size = 0
		n.Content = nil
		n.Payload = ""
		n.Digest = verity.Digest{}
		return nil
	case key == xattrEscWhiteouts || key == xattrUserWhiteout || key == xattrUserWhiteouts:
		return nil
	case strings.HasPrefix(key, xattrOverlayPrefix):
		if !strings.HasPrefix(key, xattrEscapedPrefix) {
			return nil // a real overlayfs xattr the writer added
		}
		key = r.internKey(xattrOverlayPrefix + key[len(xattrEscapedPrefix):])
	}
	xs.budget += 2*xattrEntryHeaderSize - 1 + len(key) + len(value)
	if len(xs.list) == 0 {
		xs.budget += xattrIbodyHeaderSize
	}
	if xs.budget > maxReadXattrBudget {
		return w.fail(off, ErrLimit, "xattrs take more than %d bytes", maxReadXattrBudget)
	}
	xs.set(key, value)
	return nil
}

func (r *imgReader) internKey(k string) string {
	if v, ok := r.keys[k]; ok {
		return v
	}
	r.keys[k] = k
	return k
}
