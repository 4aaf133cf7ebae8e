package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The reader parses an image into the tree model. It treats the image as
// hostile: every offset is checked against the image size before it is
// used, every allocation is bounded by what the image can hold, directory
// loops are refused and the walk keeps its own stack instead of recursing.
//
// It accepts what composefs writers produce and refuses EROFS features they
// never use (compression, long xattr prefixes, extra devices, ...) with
// ErrUnsupported. The tree is rebuilt the way upstream's reader does, so
// that writing the tree again gives the same image.

// MaxImageFileSize is the largest image ReadImageFile accepts.
const MaxImageFileSize = 1 << 30

// Limits and format details only the reader needs.
const (
	// maxReadDepth bounds directory nesting. A path deeper than this
	// cannot be resolved within PATH_MAX anyway.
	maxReadDepth = 4096

	// i_format: bit 0 is the inode version, bits 1-3 the data layout;
	// anything above is a feature we do not know.
	inodeFormatVersionMask = 0x1
	inodeFormatLayoutShift = 1
	inodeFormatLayoutMask  = 0x7
	inodeFormatKnownBits   = 0xf

	// erofs_inode_chunk_info.format
	chunkFormatBlkbitsMask = 0x1f
	chunkFormatIndexes     = 0x20

	// e_name_index with this bit refers to a long (custom) prefix.
	xattrLongPrefixFlag = 0x80

	// Superblock feature bits the reader refuses.
	featureCompatSbChksum = 0x1
)

// Error kinds. Every error ReadImage returns is a *FormatError whose Err
// wraps exactly one of these, so callers can test with errors.Is.
var (
	// ErrTruncated: the image is shorter than its own headers say.
	ErrTruncated = errors.New("truncated image")
	// ErrBadMagic: the composefs header or the EROFS superblock has the
	// wrong magic number; this is not a composefs image.
	ErrBadMagic = errors.New("bad magic")
	// ErrUnsupported: a version, feature or layout composefs does not
	// write (compression, long xattr prefixes, other block sizes, ...).
	ErrUnsupported = errors.New("unsupported feature")
	// ErrCorrupt: the structures are inconsistent (out-of-range offsets,
	// unsorted or malformed directory entries, bad xattr entries, ...).
	ErrCorrupt = errors.New("corrupt image")
	// ErrLoop: a directory is reachable twice (a loop or a hardlinked
	// directory).
	ErrLoop = errors.New("directory loop")
	// ErrLimit: the image describes more than the reader accepts (depth,
	// entries, sizes the writer would refuse).
	ErrLimit = errors.New("image exceeds reader limits")
)

// FormatError describes what is wrong with an image and where.
type FormatError struct {
	Offset int64  // byte offset of the broken structure, -1 if unknown
	Nid    uint64 // inode being read; 0 if the error is not about an inode
	Path   string // path of that inode in the tree, "" if unknown
	Err    error  // wraps one of the Err* kinds
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("image: ")
	switch {
	case e.Nid != 0 && e.Path != "":
		fmt.Fprintf(&b, "inode %d (%s)", e.Nid, e.Path)
	case e.Nid != 0:
		fmt.Fprintf(&b, "inode %d", e.Nid)
	case e.Path != "":
		b.WriteString(e.Path)
	}
	if e.Offset >= 0 {
		if e.Nid != 0 || e.Path != "" {
			b.WriteString(" at ")
		}
		fmt.Fprintf(&b, "offset %#x", e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FormatError) Unwrap() error { return e.Err }

// rdKindError is a message that wraps an error kind without repeating it.
type rdKindError struct {
	kind error
	msg  string
}

func (e *rdKindError) Error() string { return e.msg }
func (e *rdKindError) Unwrap() error { return e.kind }

// Image is a parsed composefs image.
type Image struct {
	Version int    // composefs_version from the composefs header (0 or 1)
	Flags   uint32 // composefs header flags (bit 0: image has ACLs)
	Root    *Node
	Inodes  int // inode count from the superblock (includes whiteout stubs)
}

// ReadImageFile reads and parses the image at path. Files larger than
// MaxImageFileSize are refused.
func ReadImageFile(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxImageFileSize {
		return nil, fmt.Errorf("%s: image is %d bytes, larger than the %d byte limit: %w",
			path, fi.Size(), MaxImageFileSize, ErrLimit)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxImageFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxImageFileSize {
		return nil, fmt.Errorf("%s: image is larger than the %d byte limit: %w",
			path, MaxImageFileSize, ErrLimit)
	}
	img, err := ReadImage(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// imgReader holds the state of one ReadImage call.
type imgReader struct {
	img       []byte // the filesystem: data[:blocks*4096]
	buildTime Timespec
	xattrBase uint64 // byte offset of the shared xattr area

	dirs   map[uint64]bool     // directory nids already read
	seen   map[uint64]*Node    // non-directory nids already read
	shared map[uint32]rdShared // decoded shared xattr entries by id
	keys   map[string]string   // interned xattr names
	keyBuf []byte

	entries    int   // directory entries read so far
	maxEntries int   // bound derived from the image size
	budget     int64 // bytes left for names, xattrs, content
}

// rdWhere identifies the inode being read for error messages: the entry
// name in its parent directory (parent nil for the root).
type rdWhere struct {
	nid    uint64
	parent *Node
	name   string
}

func (w rdWhere) path() string {
	if w.parent == nil {
		return "/"
	}
	p := w.parent.Path()
	if p == "/" {
		return "/" + w.name
	}
	return p + "/" + w.name
}

func rdFail(off uint64, kind error, format string, args ...any) *FormatError {
	o := int64(off)
	if off > 1<<62 {
		o = -1
	}
	return &FormatError{Offset: o, Err: &rdKindError{kind, fmt.Sprintf(format, args...)}}
}

// fail makes an error about the inode w identifies.
func (w rdWhere) fail(off uint64, kind error, format string, args ...any) *FormatError {
	e := rdFail(off, kind, format, args...)
	e.Nid = w.nid
	e.Path = w.path()
	return e
}

// ReadImage parses a composefs image held in memory. The returned tree
// does not alias data.
func ReadImage(data []byte) (*Image, error) {
	img, err := readImageBytes(data)
	if err != nil {
		return nil, err
	}
	return img, nil
}

func readImageBytes(data []byte) (*Image, *FormatError) {
	r, h, err := newImgReader(data)
	if err != nil {
		return nil, err
	}
	root, err := r.walk(h.rootNid)
	if err != nil {
		return nil, err
	}
	return &Image{Version: int(h.version), Flags: h.flags, Root: root, Inodes: int(h.inos)}, nil
}

// imgHeader is what newImgReader learns from the headers.
type imgHeader struct {
	version, flags uint32
	inos           uint64
	rootNid        uint64
}

// newImgReader checks the composefs header and the EROFS superblock.
func newImgReader(data []byte) (*imgReader, imgHeader, *FormatError) {
	var h imgHeader
	n := uint64(len(data))
	if n < composefsHeaderSize {
		return nil, h, rdFail(0, ErrTruncated, "image is %d bytes, too short for the composefs header", n)
	}
	if m := le.Uint32(data[hdrMagic:]); m != ComposefsMagic {
		return nil, h, rdFail(hdrMagic, ErrBadMagic, "composefs header magic is %#08x, want %#08x", m, ComposefsMagic)
	}
	if v := le.Uint32(data[hdrVersion:]); v != composefsHeaderVersion {
		return nil, h, rdFail(hdrVersion, ErrUnsupported, "composefs header version %d not supported (want %d)", v, composefsHeaderVersion)
	}
	version := le.Uint32(data[hdrComposefsVersion:])
	if version > MaxFormatVersion {
		return nil, h, rdFail(hdrComposefsVersion, ErrUnsupported, "composefs_version %d not supported (max %d)", version, MaxFormatVersion)
	}
	flags := le.Uint32(data[hdrFlags:])
	if flags&^headerFlagHasACL != 0 {
		return nil, h, rdFail(hdrFlags, ErrUnsupported, "composefs header flags %#x has unknown bits", flags)
	}

	if n < SuperblockOffset+superblockSize {
		return nil, h, rdFail(SuperblockOffset, ErrTruncated, "image is %d bytes, too short for the EROFS superblock", n)
	}
	sb := data[SuperblockOffset : SuperblockOffset+superblockSize]
	if m := le.Uint32(sb[sbMagic:]); m != ErofsMagic {
		return nil, h, rdFail(SuperblockOffset+sbMagic, ErrBadMagic, "EROFS superblock magic is %#08x, want %#08x", m, ErofsMagic)
	}
	if bits := sb[sbBlkszbits]; bits != blockSizeBits {
		return nil, h, rdFail(SuperblockOffset+sbBlkszbits, ErrUnsupported, "blkszbits %d not supported (want %d, 4096-byte blocks)", bits, blockSizeBits)
	}
	if f := le.Uint32(sb[sbFeatureIncompat:]); f != 0 {
		return nil, h, rdFail(SuperblockOffset+sbFeatureIncompat, ErrUnsupported,
			"unsupported feature: feature_incompat %#x (%s); composefs images use none", f, rdIncompatNames(f))
	}
	if f := le.Uint32(sb[sbFeatureCompat:]); f&featureCompatSbChksum != 0 {
		// Harmless to ignore, but composefs never sets it: refuse rather
		// than silently skip a checksum someone expects to be verified.
		return nil, h, rdFail(SuperblockOffset+sbFeatureCompat, ErrUnsupported, "unsupported feature: superblock checksum (feature_compat %#x)", f)
	}
	if v := le.Uint32(sb[sbMetaBlkaddr:]); v != 0 {
		return nil, h, rdFail(SuperblockOffset+sbMetaBlkaddr, ErrUnsupported, "meta_blkaddr %d not supported (composefs uses 0)", v)
	}
	if v := sb[sbDirblkbits]; v != 0 {
		return nil, h, rdFail(SuperblockOffset+sbDirblkbits, ErrUnsupported, "dirblkbits %d not supported", v)
	}
	if v := sb[sbXattrPrefixCnt]; v != 0 {
		return nil, h, rdFail(SuperblockOffset+sbXattrPrefixCnt, ErrUnsupported, "unsupported feature: %d long xattr prefixes", v)
	}
	if v := le.Uint16(sb[sbExtraDevices:]); v != 0 {
		return nil, h, rdFail(SuperblockOffset+sbExtraDevices, ErrUnsupported, "unsupported feature: %d extra devices", v)
	}

	blocks := uint64(le.Uint32(sb[sbBlocks:]))
	fsSize := blocks * BlockSize
	if fsSize > n {
		return nil, h, rdFail(SuperblockOffset+sbBlocks, ErrTruncated,
			"image is truncated: superblock says %d blocks (%d bytes), image has %d bytes", blocks, fsSize, n)
	}
	if fsSize < inodeTableStart+compactInodeSize {
		return nil, h, rdFail(SuperblockOffset+sbBlocks, ErrCorrupt, "superblock says %d blocks, too small to hold an inode", blocks)
	}
	r := &imgReader{
		img: data[:fsSize],
		buildTime: Timespec{
			Sec:  int64(le.Uint64(sb[sbBuildTime:])),
			Nsec: le.Uint32(sb[sbBuildTimeNsec:]),
		},
		dirs:   make(map[uint64]bool),
		seen:   make(map[uint64]*Node),
		shared: make(map[uint32]rdShared),
		keys:   make(map[string]string),
		// A directory entry takes at least 13 bytes of the image.
		maxEntries: int(fsSize / (direntSize + 1)),
		// Everything the tree holds is copied from distinct bytes of a
		// well-formed image; leave room for prefixes and small overhead.
		budget: int64(2*fsSize + 1<<20),
	}

	xattrBlk := uint64(le.Uint32(sb[sbXattrBlkaddr:]))
	if xattrBlk > blocks {
		return nil, h, rdFail(SuperblockOffset+sbXattrBlkaddr, ErrCorrupt, "xattr_blkaddr %d is past the last block %d", xattrBlk, blocks)
	}
	r.xattrBase = xattrBlk * BlockSize

	inos := le.Uint64(sb[sbInos:])
	if inos > fsSize/inodeSlotSize {
		return nil, h, rdFail(SuperblockOffset+sbInos, ErrCorrupt, "superblock claims %d inodes, the image can hold at most %d", inos, fsSize/inodeSlotSize)
	}

	rootNid := uint64(le.Uint16(sb[sbRootNid:]))
	if err := r.checkNid(rootNid); err != "" {
		return nil, h, rdFail(SuperblockOffset+sbRootNid, ErrCorrupt, "root_nid %d: %s", rootNid, err)
	}

	h = imgHeader{version: version, flags: flags, inos: inos, rootNid: rootNid}
	return r, h, nil
}

func rdIncompatNames(f uint32) string {
	names := []string{"zero_padding/lz4_0padding", "compr_cfgs/big_pcluster", "chunked_file", "device_table/compr_head2", "ztailpacking", "fragments/dedupe", "xattr_prefixes"}
	var out []string
	for i, s := range names {
		if f&(1<<i) != 0 {
			out = append(out, s)
		}
	}
	if f>>len(names) != 0 {
		out = append(out, fmt.Sprintf("unknown %#x", f>>len(names)<<len(names)))
	}
	return strings.Join(out, ", ")
}

// checkNid reports why nid cannot be an inode, or "".
func (r *imgReader) checkNid(nid uint64) string {
	size := uint64(len(r.img))
	switch {
	case nid > size/inodeSlotSize:
		return "outside the image"
	case nid*inodeSlotSize < inodeTableStart:
		return "inside the composefs header or superblock"
	case nid*inodeSlotSize+compactInodeSize > size:
		return "outside the image"
	}
	return ""
}

// rdInode is the decoded fixed part of an on-disk inode.
type rdInode struct {
	nid       uint64
	off       uint64 // byte offset in the image
	extended  bool
	layout    uint16
	mode      uint32
	nlink     uint32
	size      uint64
	uid, gid  uint32
	mtime     Timespec
	iu        uint32 // raw_blkaddr / rdev / chunk info
	icount    uint16
	isize     uint64 // 32 or 64
	xattrSize uint64 // size of the xattr ibody
}

// bodyEnd is where the inline tail data starts.
func (ino *rdInode) bodyEnd() uint64 { return ino.off + ino.isize + ino.xattrSize }

// readInode decodes the inode at nid; nid has passed checkNid.
func (r *imgReader) readInode(w rdWhere) (*rdInode, *FormatError) {
	nid := w.nid
	off := nid * inodeSlotSize
	b := r.img[off:]
	format := le.Uint16(b[inoFormat:])
	if format&^inodeFormatKnownBits != 0 {
		return nil, w.fail(off, ErrUnsupported, "i_format %#x has unknown bits", format)
	}
	ino := &rdInode{
		nid:      nid,
		off:      off,
		extended: format&inodeFormatVersionMask == inodeVersionExtended,
		layout:   format >> inodeFormatLayoutShift & inodeFormatLayoutMask,
		icount:   le.Uint16(b[inoXattrIcount:]),
		mode:     uint32(le.Uint16(b[inoMode:])),
		iu:       le.Uint32(b[inoU:]),
	}
	switch ino.layout {
	case layoutFlatPlain, layoutFlatInline, layoutChunkBased:
	case 1, 3:
		return nil, w.fail(off, ErrUnsupported, "unsupported feature: compressed data layout %d", ino.layout)
	default:
		return nil, w.fail(off, ErrUnsupported, "unknown data layout %d", ino.layout)
	}
	if ino.extended {
		if off+extendedInodeSize > uint64(len(r.img)) {
			return nil, w.fail(off, ErrCorrupt, "extended inode runs past the end of the image")
		}
		ino.isize = extendedInodeSize
		ino.size = le.Uint64(b[einoSize:])
		ino.uid = le.Uint32(b[einoUID:])
		ino.gid = le.Uint32(b[einoGID:])
		ino.mtime = Timespec{Sec: int64(le.Uint64(b[einoMtime:])), Nsec: le.Uint32(b[einoMtimeNsec:])}
		ino.nlink = le.Uint32(b[einoNlink:])
	} else {
		ino.isize = compactInodeSize
		ino.size = uint64(le.Uint32(b[cinoSize:]))
		ino.uid = uint32(le.Uint16(b[cinoUID:]))
		ino.gid = uint32(le.Uint16(b[cinoGID:]))
		ino.mtime = r.buildTime
		ino.nlink = uint32(le.Uint16(b[cinoNlink:]))
	}
	if fileTypeOf(ino.mode) == FileTypeUnknown {
		return nil, w.fail(off+inoMode, ErrCorrupt, "invalid file mode %#o", ino.mode)
	}
	if ino.icount > 0 {
		ino.xattrSize = xattrIbodyHeaderSize + uint64(ino.icount-1)*4
	}
	if ino.bodyEnd() > uint64(len(r.img)) {
		return nil, w.fail(off, ErrCorrupt, "xattr area (%d bytes) runs past the end of the image", ino.xattrSize)
	}
	return ino, nil
}

// charge takes n bytes from the allocation budget.
func (r *imgReader) charge(w rdWhere, off uint64, n int) *FormatError {
	r.budget -= int64(n)
	if r.budget < 0 {
		return w.fail(off, ErrLimit, "the image expands to more data than it holds (shared blocks?)")
	}
	return nil
}

// span returns img[off:off+n] or an error naming what.
func (r *imgReader) span(w rdWhere, off, n uint64, what string) ([]byte, *FormatError) {
	size := uint64(len(r.img))
	if off > size || n > size-off {
		return nil, w.fail(off, ErrCorrupt, "%s (%d bytes at offset %#x) are outside the image of %d bytes", what, n, off, size)
	}
	return r.img[off : off+n], nil
}

// flatData returns the data of a flat inode: the part stored in blocks at
// raw_blkaddr and the tail stored inline after the inode.
func (r *imgReader) flatData(w rdWhere, ino *rdInode, what string) (blocks, tail []byte, err *FormatError) {
	size := ino.size
	if size > uint64(len(r.img)) {
		return nil, nil, w.fail(ino.off+rdSizeOff(ino), ErrCorrupt, "%s size %d is larger than the image", what, size)
	}
	blockLen := size
	var tailLen uint64
	if ino.layout == layoutFlatInline {
		tailLen = size % BlockSize
		blockLen = size - tailLen
		if size > 0 && tailLen == 0 {
			return nil, nil, w.fail(ino.off, ErrCorrupt, "inline layout but %s size %d leaves no inline tail", what, size)
		}
	}
	if blockLen > 0 {
		start := uint64(ino.iu) * BlockSize
		blocks, err = r.span(w, start, blockLen, what+" data blocks")
		if err != nil {
			return nil, nil, err
		}
	}
	if tailLen > 0 {
		tail, err = r.span(w, ino.bodyEnd(), tailLen, what+" inline tail")
		if err != nil {
			return nil, nil, err
		}
	}
	return blocks, tail, nil
}

func rdSizeOff(ino *rdInode) uint64 {
	if ino.extended {
		return einoSize
	}
	return cinoSize
}

// rdDirent is a parsed directory entry other than "." and "..".
type rdDirent struct {
	name   string
	nid    uint64
	ftype  uint8
	off    uint64 // offset of the dirent, for errors
	nameAt uint64 // offset of the name
}

// rdFrame is a directory being walked.
type rdFrame struct {
	dir   *Node
	nid   uint64
	ents  []rdDirent
	next  int
	depth int
}

// walk reads the tree below the root directory. It visits entries in
// depth-first pre-order with sorted children, like upstream's recursive
// reader, so hard links resolve to the same first occurrence.
func (r *imgReader) walk(rootNid uint64) (*Node, *FormatError) {
	w := rdWhere{nid: rootNid}
	ino, err := r.readInode(w)
	if err != nil {
		return nil, err
	}
	if ino.mode&ModeTypeMask != ModeDir {
		return nil, w.fail(ino.off+inoMode, ErrCorrupt, "root inode is not a directory (mode %#o)", ino.mode)
	}
	root, skip, err := r.buildNode(w, ino, "")
	if err != nil {
		return nil, err
	}
	if skip {
		return nil, w.fail(ino.off, ErrCorrupt, "root inode is a whiteout")
	}
	r.dirs[rootNid] = true
	ents, err := r.readDir(w, ino, rootNid)
	if err != nil {
		return nil, err
	}
	root.Children = make([]*Node, 0, len(ents))
	stack := []*rdFrame{{dir: root, nid: rootNid, ents: ents}}

	for len(stack) > 0 {
		f := stack[len(stack)-1]
		if f.next == len(f.ents) {
			f.ents = nil
			stack = stack[:len(stack)-1]
			continue
		}
		e := &f.ents[f.next]
		f.next++
		dw := rdWhere{nid: f.nid, parent: f.dir.Parent, name: f.dir.Name}
		if msg := r.checkNid(e.nid); msg != "" {
			return nil, dw.fail(e.off, ErrCorrupt, "entry %q points at nid %d %s", e.name, e.nid, msg)
		}
		cw := rdWhere{nid: e.nid, parent: f.dir, name: e.name}
		ino, err := r.readInode(cw)
		if err != nil {
			return nil, err
		}
		if ft := fileTypeOf(ino.mode); ft != e.ftype {
			return nil, dw.fail(e.off, ErrCorrupt, "entry %q has file type %d but inode %d has mode %#o (type %d)",
				e.name, e.ftype, e.nid, ino.mode, ft)
		}

		if ino.mode&ModeTypeMask == ModeDir {
			if r.dirs[e.nid] {
				return nil, cw.fail(ino.off, ErrLoop, "directory loop/hardlinked directory at nid %d", e.nid)
			}
			r.dirs[e.nid] = true
			if f.depth+1 > maxReadDepth {
				return nil, cw.fail(ino.off, ErrLimit, "directories nested deeper than %d levels", maxReadDepth)
			}
			child, _, err := r.buildNode(cw, ino, e.name)
			if err != nil {
				return nil, err
			}
			child.Parent = f.dir
			f.dir.Children = append(f.dir.Children, child)
			ents, err := r.readDir(cw, ino, f.nid)
			if err != nil {
				return nil, err
			}
			child.Children = make([]*Node, 0, len(ents))
			stack = append(stack, &rdFrame{dir: child, nid: e.nid, ents: ents, depth: f.depth + 1})
			continue
		}

		if first := r.seen[e.nid]; first != nil {
			link := &Node{Name: e.name, Mode: first.Mode, LinkTo: first, Parent: f.dir}
			f.dir.Children = append(f.dir.Children, link)
			continue
		}
		child, skip, err := r.buildNode(cw, ino, e.name)
		if err != nil {
			return nil, err
		}
		if skip {
			continue
		}
		r.seen[e.nid] = child
		child.Parent = f.dir
		f.dir.Children = append(f.dir.Children, child)
	}
	return root, nil
}

// buildNode turns an inode into a Node: attributes, data and xattrs.
// skip is true for a real whiteout (chardev 0/0), which the tree omits.
func (r *imgReader) buildNode(w rdWhere, ino *rdInode, name string) (n *Node, skip bool, err *FormatError) {
	n = &Node{
		Name:  name,
		Mode:  ino.mode,
		Nlink: ino.nlink,
		UID:   ino.uid,
		GID:   ino.gid,
		Size:  ino.size,
		Mtime: ino.mtime,
	}
	typ := ino.mode & ModeTypeMask
	if ino.layout == layoutChunkBased && typ != ModeReg {
		return nil, false, w.fail(ino.off, ErrUnsupported, "chunk-based layout on a non-regular file (mode %#o)", ino.mode)
	}
	switch typ {
	case ModeChr, ModeBlk:
		n.Rdev = uint64(ino.iu)
		if typ == ModeChr && n.Rdev == 0 {
			// The whiteout stubs a writer adds to the root, or any other
			// real whiteout: not part of the tree. A whiteout stands for
			// a missing file and cannot be hard linked.
			if ino.nlink > 1 {
				return nil, false, w.fail(ino.off, ErrCorrupt, "whiteout (chardev 0/0) with nlink %d", ino.nlink)
			}
			return nil, true, nil
		}
	case ModeDir:
		// Entries are read by the caller.
	case ModeSymlink:
		if ino.size == 0 || ino.size > MaxSymlinkLen {
			return nil, false, w.fail(ino.off+rdSizeOff(ino), ErrCorrupt, "symlink target length %d (want 1..%d)", ino.size, MaxSymlinkLen)
		}
		blocks, tail, err := r.flatData(w, ino, "symlink target")
		if err != nil {
			return nil, false, err
		}
		target := blocks
		if tail != nil {
			target = tail
		}
		if i := bytes.IndexByte(target, 0); i >= 0 {
			return nil, false, w.fail(ino.off, ErrCorrupt, "symlink target contains a NUL byte at %d", i)
		}
		if err := r.charge(w, ino.off, len(target)); err != nil {
			return nil, false, err
		}
		n.Payload = string(target)
	case ModeReg:
		if ino.layout == layoutChunkBased {
			if err := r.checkChunks(w, ino); err != nil {
				return nil, false, err
			}
		} else if ino.size > 0 {
			if ino.size > MaxInlineContent {
				return nil, false, w.fail(ino.off+rdSizeOff(ino), ErrLimit, "inline file content of %d bytes is over the %d byte limit", ino.size, MaxInlineContent)
			}
			blocks, tail, err := r.flatData(w, ino, "file content")
			if err != nil {
				return nil, false, err
			}
			if err := r.charge(w, ino.off, int(ino.size)); err != nil {
				return nil, false, err
			}
			content := make([]byte, 0, ino.size)
			content = append(content, blocks...)
			content = append(content, tail...)
			n.Content = content
		}
	}
	if err := r.readXattrs(w, ino, n); err != nil {
		return nil, false, err
	}
	return n, false, nil
}

// checkChunks validates a chunk-based (external) file: the chunk format
// and the bounds of its chunk index array.
func (r *imgReader) checkChunks(w rdWhere, ino *rdInode) *FormatError {
	format := uint16(ino.iu)
	if format&chunkFormatIndexes != 0 {
		return w.fail(ino.off+inoU, ErrUnsupported, "unsupported feature: chunk format %#x uses 8-byte chunk indexes", format)
	}
	if format&^chunkFormatBlkbitsMask != 0 {
		return w.fail(ino.off+inoU, ErrUnsupported, "chunk format %#x has unknown bits", format)
	}
	if ino.size == 0 {
		return nil
	}
	bits := uint(blockSizeBits + format&chunkFormatBlkbitsMask)
	count := ino.size >> bits
	if ino.size&(1<<bits-1) != 0 {
		count++
	}
	if count > maxExternalChunks {
		return w.fail(ino.off+rdSizeOff(ino), ErrLimit, "file size %d needs %d chunks of 2^%d bytes, more than %d",
			ino.size, count, bits, maxExternalChunks)
	}
	// The index array follows the xattrs. Upstream writes arrays that do
	// not fit into a data block instead, but the inode is then followed
	// by at least that block, so the inline range is in bounds either way.
	if _, err := r.span(w, ino.bodyEnd(), count*chunkEntrySize, "chunk index array"); err != nil {
		return err
	}
	return nil
}

// readDir reads and validates the entries of directory ino. parentNid is
// what ".." must point at. "." and ".." are checked and left out.
func (r *imgReader) readDir(w rdWhere, ino *rdInode, parentNid uint64) ([]rdDirent, *FormatError) {
	if ino.layout != layoutFlatPlain && ino.layout != layoutFlatInline {
		return nil, w.fail(ino.off, ErrUnsupported, "directory with data layout %d", ino.layout)
	}
	blocks, tail, err := r.flatData(w, ino, "directory")
	if err != nil {
		return nil, err
	}
	// Offsets of the chunks, for error messages.
	blocksOff := uint64(ino.iu) * BlockSize
	tailOff := ino.bodyEnd()

	var ents []rdDirent
	var prev string
	havePrev, haveDot, haveDotDot := false, false, false
	one := func(chunk []byte, chunkOff uint64) *FormatError {
		if len(chunk) < direntSize {
			return w.fail(chunkOff, ErrCorrupt, "directory block of %d bytes is too small for an entry", len(chunk))
		}
		first := uint64(le.Uint16(chunk[8:]))
		if first%direntSize != 0 || first == 0 || first >= uint64(len(chunk)) {
			return w.fail(chunkOff+8, ErrCorrupt, "first name offset %d in a %d byte directory block is not a valid dirent array size", first, len(chunk))
		}
		count := int(first / direntSize)
		r.entries += count
		if r.entries > r.maxEntries {
			return w.fail(chunkOff, ErrLimit, "more directory entries than the image can hold (%d)", r.maxEntries)
		}
		for i := 0; i < count; i++ {
			d := chunk[i*direntSize:]
			doff := chunkOff + uint64(i*direntSize)
			nameoff := uint64(le.Uint16(d[8:]))
			var end uint64
			if i+1 < count {
				end = uint64(le.Uint16(chunk[(i+1)*direntSize+8:]))
				if end <= nameoff || end > uint64(len(chunk)) {
					return w.fail(doff+direntSize+8, ErrCorrupt, "name offset %d of entry %d does not follow %d within the %d byte block",
						end, i+1, nameoff, len(chunk))
				}
			} else {
				if nameoff >= uint64(len(chunk)) {
					return w.fail(doff+8, ErrCorrupt, "name offset %d of the last entry is past the %d byte block", nameoff, len(chunk))
				}
				end = uint64(len(chunk))
				if z := bytes.IndexByte(chunk[nameoff:], 0); z >= 0 {
					end = nameoff + uint64(z)
				}
			}
			nb := chunk[nameoff:end]
			if msg := rdBadName(nb); msg != "" {
				return w.fail(chunkOff+nameoff, ErrCorrupt, "entry %d: %s", i, msg)
			}
			if havePrev && string(nb) <= prev {
				return w.fail(chunkOff+nameoff, ErrCorrupt, "entry %q is not sorted after %q (or is a duplicate)", nb, prev)
			}
			nid := le.Uint64(d[0:])
			ftype := d[10]
			switch string(nb) {
			case ".":
				if nid != w.nid || ftype != FileTypeDir {
					return w.fail(doff, ErrCorrupt, `"." points at nid %d (type %d), not at the directory itself`, nid, ftype)
				}
				haveDot = true
				prev, havePrev = ".", true
				continue
			case "..":
				if nid != parentNid || ftype != FileTypeDir {
					return w.fail(doff, ErrCorrupt, `".." points at nid %d (type %d), not at the parent directory %d`, nid, ftype, parentNid)
				}
				haveDotDot = true
				prev, havePrev = "..", true
				continue
			}
			if err := r.charge(w, doff, len(nb)); err != nil {
				return err
			}
			name := string(nb)
			ents = append(ents, rdDirent{name: name, nid: nid, ftype: ftype, off: doff, nameAt: chunkOff + nameoff})
			prev, havePrev = name, true
		}
		return nil
	}
	for i := 0; i < len(blocks); i += BlockSize {
		end := min(i+BlockSize, len(blocks))
		if err := one(blocks[i:end], blocksOff+uint64(i)); err != nil {
			return nil, err
		}
	}
	if len(tail) > 0 {
		if err := one(tail, tailOff); err != nil {
			return nil, err
		}
	}
	if !haveDot || !haveDotDot {
		return nil, w.fail(ino.off, ErrCorrupt, `directory has no "." or ".." entry`)
	}
	return ents, nil
}

// rdBadName reports what is wrong with a directory entry name, or "".
func rdBadName(b []byte) string {
	switch {
	case len(b) == 0:
		return "empty name"
	case len(b) > MaxNameLen:
		return fmt.Sprintf("name of %d bytes is longer than %d", len(b), MaxNameLen)
	case bytes.IndexByte(b, '/') >= 0:
		return fmt.Sprintf("name %q contains '/'", b)
	case bytes.IndexByte(b, 0) >= 0:
		return fmt.Sprintf("name %q contains a NUL byte", b)
	}
	return ""
}
