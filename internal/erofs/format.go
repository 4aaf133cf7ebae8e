// Package erofs writes and reads composefs images: EROFS filesystems that
// hold only metadata and point every regular file at a content-addressed
// object through overlayfs xattrs.
//
// The writer reproduces upstream mkcomposefs byte for byte, so the fs-verity
// digest of an image is the same number every composefs tool computes. The
// reader treats every image as hostile input.
//
// Layout of an image (all integers little-endian, all padding zero):
//
//	offset 0      composefs header (32 bytes), zeros up to 1024
//	offset 1024   EROFS superblock (128 bytes)
//	offset 1152   inodes, each on a 32-byte slot (nid = offset/32)
//	              shared xattr table, 4-byte aligned entries
//	block aligned data blocks (directory blocks, long symlinks, content)
package erofs

import "encoding/binary"

var le = binary.LittleEndian

// composefs header at offset 0.
const (
	ComposefsMagic         = 0xd078629a
	composefsHeaderVersion = 1 // version of the header layout itself
	composefsHeaderSize    = 32

	headerFlagHasACL = 1 << 0

	// offsets within the header
	hdrMagic            = 0
	hdrVersion          = 4
	hdrFlags            = 8
	hdrComposefsVersion = 12
)

// Format versions the writer can produce. Version 1 differs from 0 only in
// the header field and in marking directories that hold whiteouts opaque=x.
const (
	FormatVersion0   = 0
	FormatVersion1   = 1
	MaxFormatVersion = FormatVersion1
)

// EROFS superblock.
const (
	SuperblockOffset = 1024
	superblockSize   = 128
	ErofsMagic       = 0xE0F5E1E2

	blockSizeBits = 12
	BlockSize     = 1 << blockSizeBits

	featureCompatMtime       = 0x2
	featureCompatXattrFilter = 0x4

	// offsets within the superblock
	sbMagic           = 0
	sbChecksum        = 4
	sbFeatureCompat   = 8
	sbBlkszbits       = 12
	sbExtslots        = 13
	sbRootNid         = 14
	sbInos            = 16
	sbBuildTime       = 24
	sbBuildTimeNsec   = 32
	sbBlocks          = 36
	sbMetaBlkaddr     = 40
	sbXattrBlkaddr    = 44
	sbUUID            = 48
	sbVolumeName      = 64
	sbFeatureIncompat = 80
	sbExtraDevices    = 86
	sbDirblkbits      = 90
	sbXattrPrefixCnt  = 91
	sbPackedNid       = 96
)

// inodeTableStart is where the first inode sits; nids count 32-byte slots
// from offset 0 because meta_blkaddr is 0.
const (
	inodeTableStart = SuperblockOffset + superblockSize
	inodeSlotSize   = 32
)

// Inode layouts. The low bit of i_format selects compact (32 bytes, no mtime,
// 16-bit ids) or extended (64 bytes); the next bits the data layout.
const (
	compactInodeSize  = 32
	extendedInodeSize = 64

	inodeVersionCompact  = 0
	inodeVersionExtended = 1

	layoutFlatPlain  = 0
	layoutFlatInline = 2
	layoutChunkBased = 4

	// offsets shared by both layouts
	inoFormat      = 0
	inoXattrIcount = 2
	inoMode        = 4
	inoU           = 16
	inoIno         = 20

	// compact layout
	cinoNlink = 6
	cinoSize  = 8
	cinoUID   = 24
	cinoGID   = 26

	// extended layout
	einoSize      = 8
	einoUID       = 24
	einoGID       = 28
	einoMtime     = 32
	einoMtimeNsec = 40
	einoNlink     = 44
)

// Chunk-based files: an array of 4-byte block addresses, all "null" for
// composefs because the data comes from the overlay's data-only layer.
const (
	chunkNullAddr     = 0xFFFFFFFF
	chunkEntrySize    = 4
	maxChunkBits      = blockSizeBits + 31
	maxExternalChunks = 1024 // upstream refuses files that need more
)

// Directory entries.
const (
	direntSize = 12

	FileTypeUnknown = 0
	FileTypeReg     = 1
	FileTypeDir     = 2
	FileTypeChr     = 3
	FileTypeBlk     = 4
	FileTypeFifo    = 5
	FileTypeSock    = 6
	FileTypeSymlink = 7

	// The last directory block and file contents are stored inline after
	// the inode only when they fill at most half a block.
	maxInlineTail = BlockSize / 2
)

// Xattrs.
const (
	xattrIbodyHeaderSize = 12
	xattrEntryHeaderSize = 4
	xattrFilterSeed      = 0x25BBE08F
	// At most this many shared references per inode: 0x80 and up in the
	// shared id space would be read as long-prefix entries.
	maxSharedXattrsPerInode = 0x80

	xattrIndexNone          = 0
	xattrIndexUser          = 1
	xattrIndexPosixACLAcces = 2
	xattrIndexPosixACLDef   = 3
	xattrIndexTrusted       = 4
	xattrIndexLustre        = 5
	xattrIndexSecurity      = 6
)

// xattrPrefixes in the order upstream matches them; the first match wins.
// The ACL names are matched as prefixes too, so their suffix is empty.
var xattrPrefixes = []struct {
	index  uint8
	prefix string
}{
	{xattrIndexUser, "user."},
	{xattrIndexPosixACLAcces, "system.posix_acl_access"},
	{xattrIndexPosixACLDef, "system.posix_acl_default"},
	{xattrIndexTrusted, "trusted."},
	{xattrIndexSecurity, "security."},
}

// Limits of the input tree, as upstream enforces them.
const (
	MaxNameLen           = 255
	MaxXattrNameLen      = 255
	MaxXattrValueLen     = 65535
	MaxSymlinkLen        = 4095 // PATH_MAX - 1
	MaxInlineContent     = 5000
	RecommendedInlineMax = 64 // mkcomposefs inlines files up to this size
	// Sum of (7 + len(key) + len(value)) over a node's xattrs, plus 12.
	maxXattrBudget = 65535 / 2
)

// Overlayfs xattr names used by composefs.
const (
	xattrOverlayPrefix   = "trusted.overlay."
	xattrEscapedPrefix   = "trusted.overlay.overlay."
	xattrMetacopy        = "trusted.overlay.metacopy"
	xattrRedirect        = "trusted.overlay.redirect"
	xattrOpaque          = "trusted.overlay.opaque"
	xattrEscWhiteout     = "trusted.overlay.overlay.whiteout"
	xattrEscWhiteouts    = "trusted.overlay.overlay.whiteouts"
	xattrEscOpaque       = "trusted.overlay.overlay.opaque"
	xattrUserWhiteout    = "user.overlay.whiteout"
	xattrUserWhiteouts   = "user.overlay.whiteouts"
	xattrUserOpaque      = "user.overlay.opaque"
	xattrACLAccess       = "system.posix_acl_access"
	xattrACLDefault      = "system.posix_acl_default"
	xattrSecuritySELinux = "security.selinux"

	// struct ovl_metacopy: version 0, length 36, flags 0, hash algorithm
	// SHA-256, then the 32-byte fs-verity digest.
	metacopySize       = 36
	metacopyHashSHA256 = 1
)

// File type bits of st_mode.
const (
	ModeTypeMask = 0o170000
	ModeSock     = 0o140000
	ModeSymlink  = 0o120000
	ModeReg      = 0o100000
	ModeBlk      = 0o060000
	ModeDir      = 0o040000
	ModeChr      = 0o020000
	ModeFifo     = 0o010000
)

func roundUp(x, n uint64) uint64 { return (x + n - 1) / n * n }

// fileTypeOf maps st_mode to the EROFS dirent file type.
func fileTypeOf(mode uint32) uint8 {
	switch mode & ModeTypeMask {
	case ModeReg:
		return FileTypeReg
	case ModeDir:
		return FileTypeDir
	case ModeChr:
		return FileTypeChr
	case ModeBlk:
		return FileTypeBlk
	case ModeFifo:
		return FileTypeFifo
	case ModeSock:
		return FileTypeSock
	case ModeSymlink:
		return FileTypeSymlink
	}
	return FileTypeUnknown
}
