package initboot

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
)

// Where the root file systems cfs-init can find by UUID= and LABEL= keep
// their identity. Every offset is from the start of the device.
const (
	ext4SuperOffset = 1024
	ext4MagicOff    = ext4SuperOffset + 56 // little-endian uint16
	ext4Magic       = 0xEF53
	ext4UUIDOff     = ext4SuperOffset + 104
	ext4LabelOff    = ext4SuperOffset + 120
	ext4LabelLen    = 16

	xfsMagicOff = 0
	xfsMagic    = "XFSB"
	xfsUUIDOff  = 32
	xfsLabelOff = 108
	xfsLabelLen = 12

	btrfsSuperOffset = 65536
	btrfsMagicOff    = btrfsSuperOffset + 64
	btrfsMagic       = "_BHRfS_M"
	btrfsFSIDOff     = btrfsSuperOffset + 32
	btrfsLabelOff    = btrfsSuperOffset + 299
	btrfsLabelLen    = 256

	uuidLen = 16

	// headLen covers the ext4 and xfs superblocks; btrfs needs a second
	// read further in.
	headLen = 4096
)

// fsInfo is what a superblock says about a file system.
type fsInfo struct {
	Type  string // "ext4", "xfs", "btrfs"; "" when none was recognised
	UUID  string // 8-4-4-4-12 lower-case hex; "" if all zero
	Label string
}

// probeFS reads the superblocks of the file systems cfs-init knows from r.
// A device too short for a superblock, or one that holds none of them,
// gives an empty fsInfo and no error; read errors are returned.
func probeFS(r io.ReaderAt) (fsInfo, error) {
	head := make([]byte, headLen)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fsInfo{}, err
	}
	head = head[:n]
	if len(head) >= ext4LabelOff+ext4LabelLen && binary.LittleEndian.Uint16(head[ext4MagicOff:]) == ext4Magic {
		return fsInfo{
			Type:  "ext4",
			UUID:  formatUUID(head[ext4UUIDOff : ext4UUIDOff+uuidLen]),
			Label: cString(head[ext4LabelOff : ext4LabelOff+ext4LabelLen]),
		}, nil
	}
	if len(head) >= xfsLabelOff+xfsLabelLen && string(head[xfsMagicOff:xfsMagicOff+len(xfsMagic)]) == xfsMagic {
		return fsInfo{
			Type:  "xfs",
			UUID:  formatUUID(head[xfsUUIDOff : xfsUUIDOff+uuidLen]),
			Label: cString(head[xfsLabelOff : xfsLabelOff+xfsLabelLen]),
		}, nil
	}
	if len(head) < headLen {
		return fsInfo{}, nil // shorter than 4 KiB: no btrfs either
	}
	sb := make([]byte, btrfsLabelOff+btrfsLabelLen-btrfsSuperOffset)
	n, err = r.ReadAt(sb, btrfsSuperOffset)
	if err != nil && !errors.Is(err, io.EOF) {
		return fsInfo{}, err
	}
	if n == len(sb) && string(sb[btrfsMagicOff-btrfsSuperOffset:][:len(btrfsMagic)]) == btrfsMagic {
		return fsInfo{
			Type:  "btrfs",
			UUID:  formatUUID(sb[btrfsFSIDOff-btrfsSuperOffset:][:uuidLen]),
			Label: cString(sb[btrfsLabelOff-btrfsSuperOffset:][:btrfsLabelLen]),
		}, nil
	}
	return fsInfo{}, nil
}

// formatUUID spells 16 bytes the way blkid and the kernel do (bytes in
// order, lower-case hex, dashes after 4, 6, 8 and 10 bytes); all zeros
// mean "no UUID".
func formatUUID(b []byte) string {
	if bytes.Count(b, []byte{0}) == len(b) {
		return ""
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
