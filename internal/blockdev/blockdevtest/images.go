// Package blockdevtest makes fake file system images for tests: just the
// superblock fields that identify a file system (magic, UUID, label), at
// the offsets the on-disk formats define.
package blockdevtest

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// UUID parses "8-4-4-4-12" hex into its 16 bytes.
func UUID(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("bad uuid %q", s)
	}
	return b
}

// Ext4 returns an 8 KiB device with an ext4 superblock at 1024.
func Ext4(t testing.TB, uuid, label string) []byte {
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint16(b[1024+56:], 0xEF53)
	copy(b[1024+104:], UUID(t, uuid))
	copy(b[1024+120:1024+136], label)
	return b
}

// XFS returns an 8 KiB device with an xfs superblock at 0.
func XFS(t testing.TB, uuid, label string) []byte {
	b := make([]byte, 8192)
	copy(b, "XFSB")
	copy(b[32:], UUID(t, uuid))
	copy(b[108:120], label)
	return b
}

// Btrfs returns a device with a btrfs superblock at 64 KiB.
func Btrfs(t testing.TB, uuid, label string) []byte {
	const sb = 65536
	b := make([]byte, sb+4096)
	copy(b[sb+64:], "_BHRfS_M")
	copy(b[sb+32:], UUID(t, uuid))
	copy(b[sb+299:sb+299+256], label)
	return b
}
