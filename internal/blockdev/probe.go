// Package blockdev identifies the file system on a block device from its
// superblock, so that a boot entry can name the root by UUID= (stable
// across device renames) instead of by /dev path.
//
// Only the file systems cfs-deploy supports as a root are known: ext4 (and
// ext2/ext3, which share its superblock), xfs and btrfs. It reads a few
// bytes at fixed offsets; nothing is mounted.
package blockdev

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// Filesystem is what a superblock says about the file system on a device.
type Filesystem struct {
	Type  string // "ext4", "xfs" or "btrfs"
	UUID  string // lower-case 8-4-4-4-12, as blkid prints it; "" if unset
	Label string
}

// ErrUnknown means no superblock of a known file system was found.
var ErrUnknown = errors.New("no ext4, xfs or btrfs superblock found")

// layout places one file system's identity on the device. Offsets are
// from the start of the device.
type layout struct {
	name                      string
	magicOff                  int64
	magic                     []byte
	uuidOff, labelOff, labLen int64
}

var layouts = []layout{
	// ext2/3/4: superblock at 1024; s_magic 0xEF53 little-endian at +0x38,
	// s_uuid at +0x68, s_volume_name[16] at +0x78.
	{"ext4", 1024 + 0x38, []byte{0x53, 0xef}, 1024 + 0x68, 1024 + 0x78, 16},
	// xfs: superblock at 0; "XFSB", sb_uuid at 32, sb_fname[12] at 108.
	{"xfs", 0, []byte("XFSB"), 32, 108, 12},
	// btrfs: primary superblock at 64 KiB; magic at +0x40, fsid at +0x20
	// (the file system UUID blkid reports), label[256] at +0x12b.
	{"btrfs", 65536 + 0x40, []byte("_BHRfS_M"), 65536 + 0x20, 65536 + 0x12b, 256},
}

// Probe reads the superblock of the file system on r.
func Probe(r io.ReaderAt) (Filesystem, error) {
	for _, l := range layouts {
		magic := make([]byte, len(l.magic))
		if err := readFull(r, magic, l.magicOff); err != nil {
			if errors.Is(err, io.EOF) {
				continue // too small to hold this superblock
			}
			return Filesystem{}, err
		}
		if !bytes.Equal(magic, l.magic) {
			continue
		}
		uuid := make([]byte, 16)
		label := make([]byte, l.labLen)
		if err := readFull(r, uuid, l.uuidOff); err != nil {
			return Filesystem{}, err
		}
		if err := readFull(r, label, l.labelOff); err != nil {
			return Filesystem{}, err
		}
		return Filesystem{Type: l.name, UUID: formatUUID(uuid), Label: cString(label)}, nil
	}
	return Filesystem{}, ErrUnknown
}

// ProbeFile probes the device (or image file) at path.
func ProbeFile(path string) (Filesystem, error) {
	f, err := os.Open(path)
	if err != nil {
		return Filesystem{}, fmt.Errorf("probe %s: %w", path, err)
	}
	defer f.Close()
	fsys, err := Probe(f)
	if err != nil {
		return Filesystem{}, fmt.Errorf("probe %s: %w", path, err)
	}
	return fsys, nil
}

// readFull reads len(b) bytes at off; a short read is io.EOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return err
}

// formatUUID spells a 16-byte UUID as blkid and the kernel do; all zeros
// is no UUID.
func formatUUID(b []byte) string {
	if bytes.Equal(b, make([]byte, len(b))) {
		return ""
	}
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
