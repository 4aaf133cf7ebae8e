package erofs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteOptions select the format version. The writer uses MinVersion unless
// the tree holds whiteouts and MaxVersion allows version 1, exactly as
// upstream mkcomposefs decides.
type WriteOptions struct {
	MinVersion int
	MaxVersion int
}

// DefaultWriteOptions are mkcomposefs's defaults: version 0, or 1 when the
// tree needs it.
var DefaultWriteOptions = WriteOptions{MinVersion: 0, MaxVersion: 1}

// Errors for trees the format cannot hold.
var (
	ErrFileTooBig   = errors.New("file too big: needs more than 1024 chunks")
	ErrBadMode      = errors.New("invalid file type in mode")
	ErrBadVersion   = errors.New("unsupported format version")
	ErrXattrTooLong = errors.New("xattr name or value too long")
	ErrBadSymlink   = errors.New("symlink target empty or longer than 4095 bytes")
	ErrBadContent   = errors.New("inline content larger than 5000 bytes")
	ErrBadHardlink  = errors.New("hard link target missing from tree or a directory")
	ErrImageTooBig  = errors.New("image exceeds EROFS limits")
)

// inode is one EROFS inode as the writer lays it out: the source node after
// the composefs rewrite (escaped overlay xattrs, metacopy and redirect,
// whiteouts turned into marked regular files), plus its position.
type inode struct {
	src   *Node // nil for the root's whiteout stubs
	mode  uint32
	nlink uint32
	uid   uint32
	gid   uint32
	rdev  uint32
	size  uint64 // st_size as held: decides compact vs extended
	mtime Timespec

	xattrs  []Xattr
	xids    []int32  // ids of xattrs in the builder's table, same order
	dirents []dirent // directories only: sorted, with "." and ".."

	// layout
	extended   bool
	nShared    int // leading xattrs stored as shared references
	xattrSize  uint64
	tail       uint64 // bytes stored inline after the inode and xattrs
	nBlocks    uint64 // full data blocks
	layout     uint16
	chunkBits  uint
	pad        uint64 // zero bytes before the inode
	nid        uint64
	index      uint32 // breadth-first position: the inode number
	blkaddr    uint64
	dirChunks  []int // index of the first dirent of each directory block
	chunkCount uint64
}

type dirent struct {
	name   string
	target *inode
	link   bool // ".", "..", or a hard link: not an inode of its own
}

type builder struct {
	version int
	inodes  []*inode // breadth-first order = inode numbers
	byNode  map[*Node]*inode
	minTime Timespec
	hasACL  bool

	// Every distinct (name, value) pair gets an id; counts and shared
	// table offsets are indexed by it, so each pair is hashed once.
	xattrIDs     map[Xattr]int32
	xattrCount   []int32
	sharedOffset []uint64 // by id; valid where xattrCount > 1
	shared       []Xattr

	inodesEnd  uint64
	dataStart  uint64
	dataBlocks uint64
}

// Write writes the composefs image of the tree at root to w.
func Write(w io.Writer, root *Node, opts WriteOptions) error {
	b, err := plan(root, opts)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	if err := b.emit(bw); err != nil {
		return err
	}
	return bw.Flush()
}

func chooseVersion(root *Node, opts WriteOptions) (int, error) {
	minV, maxV := opts.MinVersion, opts.MaxVersion
	if minV < 0 || minV > MaxFormatVersion || maxV < 0 || maxV > MaxFormatVersion {
		return 0, fmt.Errorf("%w: min %d, max %d (supported 0..%d)", ErrBadVersion, minV, maxV, MaxFormatVersion)
	}
	if maxV < minV {
		maxV = minV
	}
	v := minV
	if v < 1 && maxV >= 1 {
		// Whiteouts need version 1's opaque=x marking to be read as
		// whiteouts by newer overlayfs.
		_ = Walk(root, func(n *Node) error {
			if n.LinkTo == nil && n.IsWhiteout() {
				v = 1
				return errStop
			}
			return nil
		})
	}
	return v, nil
}

var errStop = errors.New("stop")

func plan(root *Node, opts WriteOptions) (*builder, error) {
	if root == nil || !root.IsDir() || root.LinkTo != nil {
		return nil, fmt.Errorf("root: %w", ErrNotDirectory)
	}
	v, err := chooseVersion(root, opts)
	if err != nil {
		return nil, err
	}
	b := &builder{version: v, byNode: make(map[*Node]*inode)}
	rootIno, err := b.rewrite(root, nil)
	if err != nil {
		return nil, err
	}
	setXattr(rootIno, xattrOpaque, "y")
	b.addWhiteoutStubs(rootIno, root)
	if err := b.linkDirents(root); err != nil {
		return nil, err
	}
	b.order(rootIno)
	b.computeShared()
	if err := b.layoutInodes(); err != nil {
		return nil, err
	}
	return b, nil
}

// rewrite creates the inodes of n's subtree in depth-first order, applying
// the overlayfs encoding that composefs images carry.
func (b *builder) rewrite(n *Node, parent *inode) (*inode, error) {
	if err := validateNode(n); err != nil {
		return nil, fmt.Errorf("%s: %w", n.Path(), err)
	}
	ino := &inode{
		src:   n,
		mode:  n.Mode,
		nlink: n.Nlink,
		uid:   n.UID,
		gid:   n.GID,
		size:  n.Size,
		mtime: n.Mtime,
	}
	switch n.Type() {
	case ModeChr, ModeBlk:
		ino.rdev = uint32(n.Rdev)
	case ModeSymlink:
		ino.size = uint64(len(n.Payload))
	case ModeReg:
		if n.Content != nil {
			ino.size = uint64(len(n.Content))
		}
	}
	ino.xattrs = make([]Xattr, 0, len(n.Xattrs)+2)
	for _, x := range n.Xattrs {
		// Escape the image's own overlay xattrs so that overlayfs
		// shows them to users instead of acting on them.
		if strings.HasPrefix(x.Key, xattrOverlayPrefix) {
			x.Key = xattrEscapedPrefix + x.Key[len(xattrOverlayPrefix):]
		}
		setXattr(ino, x.Key, x.Value)
	}
	if n.IsExternal() {
		metacopy := ""
		if !n.Digest.IsZero() {
			var mc [metacopySize]byte
			mc[1] = metacopySize
			mc[3] = metacopyHashSHA256
			copy(mc[4:], n.Digest[:])
			metacopy = string(mc[:])
		}
		setXattr(ino, xattrMetacopy, metacopy)
		if n.Payload != "" {
			setXattr(ino, xattrRedirect, "/"+n.Payload)
		}
	}
	if n.IsWhiteout() && parent != nil {
		// Overlayfs would hide a real whiteout in a lower layer; store it
		// as an escaped regular file that overlayfs turns back into one.
		ino.mode = ModeReg | n.Mode&^ModeTypeMask
		ino.size = 0
		ino.rdev = 0
		setXattr(ino, xattrEscWhiteout, "")
		setXattr(ino, xattrUserWhiteout, "")
		setXattr(parent, xattrEscWhiteouts, "")
		setXattr(parent, xattrUserWhiteouts, "")
		if b.version >= 1 {
			setXattr(parent, xattrEscOpaque, "x")
			setXattr(parent, xattrUserOpaque, "x")
		}
	}
	b.byNode[n] = ino
	for _, c := range n.Children {
		if c.LinkTo != nil {
			if c.LinkTo.IsDir() {
				return nil, fmt.Errorf("%s: %w", c.Path(), ErrBadHardlink)
			}
			continue
		}
		if c.Parent != n {
			return nil, fmt.Errorf("%s: child's parent pointer is wrong", c.Path())
		}
		if _, err := b.rewrite(c, ino); err != nil {
			return nil, err
		}
	}
	return ino, nil
}

func setXattr(ino *inode, key, value string) {
	for i := range ino.xattrs {
		if ino.xattrs[i].Key == key {
			ino.xattrs[i].Value = value
			return
		}
	}
	ino.xattrs = append(ino.xattrs, Xattr{key, value})
}

func validateNode(n *Node) error {
	if n.Parent != nil {
		if err := ValidName(n.Name); err != nil {
			return err
		}
	}
	if fileTypeOf(n.Mode) == FileTypeUnknown {
		return fmt.Errorf("%w: %o", ErrBadMode, n.Mode)
	}
	if len(n.Xattrs) > 0 {
		// Upstream's per-node budget: 7 bytes of bookkeeping per xattr
		// plus its name and value, and 12 for the header. It keeps the
		// inode's xattr area (and its 16-bit size field) in range
		// whatever the source of the tree.
		cost := xattrIbodyHeaderSize
		for _, x := range n.Xattrs {
			if x.Key == "" || len(x.Key) > MaxXattrNameLen || len(x.Value) > MaxXattrValueLen {
				return fmt.Errorf("%w: %q", ErrXattrTooLong, x.Key)
			}
			cost += 2*xattrEntryHeaderSize - 1 + len(x.Key) + len(x.Value)
		}
		if cost > maxXattrBudget {
			return fmt.Errorf("%w: %d bytes of xattrs, limit %d", ErrXattrTooLong, cost, maxXattrBudget)
		}
	}
	switch {
	case n.IsSymlink():
		if n.Payload == "" || len(n.Payload) > MaxSymlinkLen {
			return ErrBadSymlink
		}
	case n.IsRegular() && n.Content != nil:
		if len(n.Content) > MaxInlineContent {
			return ErrBadContent
		}
	case n.IsExternal():
		if _, count := chunkLayout(n.Size); count > maxExternalChunks {
			return fmt.Errorf("%w (size %d)", ErrFileTooBig, n.Size)
		}
	}
	return nil
}

// addWhiteoutStubs gives the root 256 whiteouts "00".."ff". They hide the
// object store's fan-out directories when an old kernel has to use it as an
// ordinary lower layer instead of a data-only one.
func (b *builder) addWhiteoutStubs(rootIno *inode, root *Node) {
	selinux, hasSELinux := root.GetXattr(xattrSecuritySELinux)
	const hex = "0123456789abcdef"
	for i := 0; i < 256; i++ {
		name := string([]byte{hex[i>>4], hex[i&15]})
		if root.Lookup(name) != nil {
			continue
		}
		stub := &inode{
			mode:  ModeChr | 0o644,
			nlink: 1,
			uid:   root.UID,
			gid:   root.GID,
			mtime: root.Mtime,
		}
		if hasSELinux {
			stub.xattrs = []Xattr{{xattrSecuritySELinux, selinux}}
		}
		rootIno.dirents = append(rootIno.dirents, dirent{name: name, target: stub})
	}
}

// linkDirents fills every directory's entry list: its children, the stubs
// already placed on the root, "." and "..", sorted by name.
func (b *builder) linkDirents(n *Node) error {
	ino := b.byNode[n]
	parent := ino
	if n.Parent != nil {
		parent = b.byNode[n.Parent]
	}
	ents := ino.dirents[:len(ino.dirents):len(ino.dirents)]
	ents = append(ents, dirent{".", ino, true}, dirent{"..", parent, true})
	for _, c := range n.Children {
		if c.LinkTo != nil {
			t := b.byNode[c.LinkTo]
			if t == nil {
				return fmt.Errorf("%s: %w", c.Path(), ErrBadHardlink)
			}
			ents = append(ents, dirent{c.Name, t, true})
			continue
		}
		ents = append(ents, dirent{c.Name, b.byNode[c], false})
	}
	slices.SortFunc(ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	ino.dirents = ents
	for _, c := range n.Children {
		if c.LinkTo == nil && c.IsDir() {
			if err := b.linkDirents(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// order numbers the inodes breadth first, the order upstream writes them,
// and fixes up directory link counts and the image-wide summaries.
func (b *builder) order(root *inode) {
	b.inodes = append(b.inodes[:0], root)
	for i := 0; i < len(b.inodes); i++ {
		ino := b.inodes[i]
		ino.index = uint32(i)
		if ino.mode&ModeTypeMask == ModeDir {
			ino.nlink = 2
		}
		for _, d := range ino.dirents {
			if d.link {
				continue
			}
			if d.target.mode&ModeTypeMask == ModeDir {
				ino.nlink++
			}
			b.inodes = append(b.inodes, d.target)
		}
	}
	b.minTime = root.mtime
	for _, ino := range b.inodes {
		if ino.mtime.Less(b.minTime) {
			b.minTime = ino.mtime
		}
		slices.SortStableFunc(ino.xattrs, func(a, b Xattr) int { return strings.Compare(a.Key, b.Key) })
		for _, x := range ino.xattrs {
			if x.Key == xattrACLAccess || x.Key == xattrACLDefault {
				b.hasACL = true
			}
		}
	}
}

// computeShared picks the xattrs stored once in the shared table: every
// (name, value) pair that occurs on more than one inode.
func (b *builder) computeShared() {
	b.xattrIDs = make(map[Xattr]int32)
	for _, ino := range b.inodes {
		ino.xids = make([]int32, len(ino.xattrs))
		for i, x := range ino.xattrs {
			id, ok := b.xattrIDs[x]
			if !ok {
				id = int32(len(b.xattrCount))
				b.xattrIDs[x] = id
				b.xattrCount = append(b.xattrCount, 0)
			}
			b.xattrCount[id]++
			ino.xids[i] = id
		}
	}
	var sharedIDs []int32
	for x, id := range b.xattrIDs {
		if b.xattrCount[id] > 1 {
			b.shared = append(b.shared, x)
			sharedIDs = append(sharedIDs, id)
		}
	}
	// Upstream sorts the table in descending order: name, then longer
	// value first, then value bytes.
	order := make([]int, len(b.shared))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		x, y := b.shared[i], b.shared[j]
		if c := strings.Compare(y.Key, x.Key); c != 0 {
			return c
		}
		if len(x.Value) != len(y.Value) {
			return len(y.Value) - len(x.Value)
		}
		return strings.Compare(y.Value, x.Value)
	})
	sorted := make([]Xattr, len(order))
	b.sharedOffset = make([]uint64, len(b.xattrCount))
	var off uint64
	for k, i := range order {
		sorted[k] = b.shared[i]
		b.sharedOffset[sharedIDs[i]] = off
		off += xattrEntrySize(b.shared[i])
	}
	b.shared = sorted
}

// xattrPrefix splits a name into the EROFS prefix index and suffix.
func xattrPrefix(key string) (uint8, string) {
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(key, p.prefix) {
			return p.index, key[len(p.prefix):]
		}
	}
	return xattrIndexNone, key
}

func xattrEntrySize(x Xattr) uint64 {
	_, suffix := xattrPrefix(x.Key)
	return roundUp(uint64(xattrEntryHeaderSize+len(suffix)+len(x.Value)), 4)
}

// chunkLayout returns the chunk size (as a power of two) and the number of
// chunks of an external file: the smallest chunk that holds the whole file,
// within EROFS's limits.
func chunkLayout(size uint64) (bits uint, count uint64) {
	bits = 1
	for s := size - 1; s > 1; s >>= 1 {
		bits++
	}
	if size <= 1 {
		bits = 1
	}
	bits = max(bits, blockSizeBits)
	bits = min(bits, maxChunkBits)
	count = (size + (1 << bits) - 1) >> bits
	return bits, count
}

// dirChunks splits a directory's entries into blocks: each entry costs its
// 12-byte record plus its name, and an entry never straddles blocks.
func dirChunks(ents []dirent) (starts []int, lastSize uint64) {
	var used uint64
	for i, d := range ents {
		l := uint64(direntSize + len(d.name))
		if i == 0 || used+l > BlockSize {
			starts = append(starts, i)
			used = 0
		}
		used += l
	}
	return starts, used
}

func (b *builder) layoutInodes() error {
	pos := uint64(inodeTableStart)
	for i, ino := range b.inodes {
		if err := b.sizeXattrs(ino); err != nil {
			return err
		}
		typ := ino.mode & ModeTypeMask
		iSize := ino.size
		switch {
		case typ == ModeDir:
			starts, last := dirChunks(ino.dirents)
			ino.dirChunks = starts
			ino.nBlocks = uint64(len(starts))
			if last <= maxInlineTail {
				ino.nBlocks--
				ino.tail = last
			}
			iSize = ino.nBlocks*BlockSize + ino.tail
			ino.size = iSize
		case typ == ModeReg && ino.src != nil && ino.src.Content != nil:
			ino.nBlocks = ino.size / BlockSize
			ino.tail = ino.size % BlockSize
			if ino.tail > maxInlineTail {
				ino.nBlocks++
				ino.tail = 0
			}
		case typ == ModeReg && ino.size > 0:
			ino.chunkBits, ino.chunkCount = chunkLayout(ino.size)
			ino.tail = ino.chunkCount * chunkEntrySize
		case typ == ModeSymlink:
			ino.tail = ino.size
		}
		ino.extended = !(ino.mtime == b.minTime && ino.nlink <= 0xFFFF &&
			ino.uid <= 0xFFFF && ino.gid <= 0xFFFF && iSize <= 0xFFFFFFFF)
		inodeSize := uint64(compactInodeSize)
		if ino.extended {
			inodeSize = extendedInodeSize
		}
		nts := inodeSize + ino.xattrSize

		pos = roundUp(pos, inodeSlotSize)
		if typ == ModeSymlink {
			// The kernel wants an inline symlink target in the same
			// block as its inode; upstream moves any symlink inode whose
			// whole record would straddle a block.
			total := nts + ino.tail
			if total >= BlockSize {
				ino.nBlocks, ino.tail = 1, 0
			}
			if pos/BlockSize != (pos+total-1)/BlockSize {
				ino.pad = roundUp(pos, BlockSize) - pos
			}
		} else if ino.tail > 0 {
			// An inline tail must not cross a block boundary.
			rem := BlockSize - (pos+nts)%BlockSize
			if rem < ino.tail {
				extra := roundUp(rem, inodeSlotSize)
				if ino.tail <= BlockSize-(pos+nts+extra)%BlockSize {
					ino.pad = extra
				} else {
					ino.nBlocks++
					ino.tail = 0
					ino.pad = roundUp(pos, BlockSize) - pos
				}
			}
		}
		pos += ino.pad
		ino.nid = pos / inodeSlotSize
		pos += nts + ino.tail

		switch {
		case typ == ModeReg && ino.src != nil && ino.src.Content == nil && ino.size > 0:
			ino.layout = layoutChunkBased
		case ino.tail > 0:
			ino.layout = layoutFlatInline
		default:
			ino.layout = layoutFlatPlain
		}
		if i == 0 && ino.nid > 0xFFFF-1 {
			return fmt.Errorf("%w: root inode at nid %d", ErrImageTooBig, ino.nid)
		}
	}
	b.inodesEnd = roundUp(pos, inodeSlotSize)
	var sharedSize uint64
	for _, x := range b.shared {
		sharedSize += xattrEntrySize(x)
	}
	b.dataStart = roundUp(b.inodesEnd+sharedSize, BlockSize)
	next := b.dataStart / BlockSize
	for _, ino := range b.inodes {
		if ino.nBlocks > 0 {
			ino.blkaddr = next
			next += ino.nBlocks
		}
	}
	b.dataBlocks = next - b.dataStart/BlockSize
	if next > 0xFFFFFFFF || uint64(len(b.inodes)) > 0xFFFFFFFF {
		return fmt.Errorf("%w: %d blocks, %d inodes", ErrImageTooBig, next, len(b.inodes))
	}
	return nil
}

// sizeXattrs decides which of an inode's xattrs are shared references and
// how large its inline xattr area is.
func (b *builder) sizeXattrs(ino *inode) error {
	if len(ino.xattrs) == 0 {
		return nil
	}
	// Shared references come first in the inode, so move the shared ones
	// (at most maxSharedXattrsPerInode, in name order) to the front while
	// keeping name order within each group.
	var shared, inline []Xattr
	var sharedIDs, inlineIDs []int32
	for i, x := range ino.xattrs {
		id := ino.xids[i]
		if b.xattrCount[id] > 1 && len(shared) < maxSharedXattrsPerInode {
			shared = append(shared, x)
			sharedIDs = append(sharedIDs, id)
		} else {
			inline = append(inline, x)
			inlineIDs = append(inlineIDs, id)
		}
	}
	ino.nShared = len(shared)
	size := uint64(xattrIbodyHeaderSize + 4*len(shared))
	for _, x := range inline {
		size += xattrEntrySize(x)
	}
	ino.xattrSize = size
	// Keep the filter over the full set; store the split order.
	ino.xattrs = append(shared, inline...)
	ino.xids = append(sharedIDs, inlineIDs...)
	if (size-xattrIbodyHeaderSize)/4+1 > 0xFFFF {
		return fmt.Errorf("%w: xattr area of %d bytes", ErrImageTooBig, size)
	}
	return nil
}
