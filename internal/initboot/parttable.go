package initboot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// The partition table fields that PARTUUID= and PARTLABEL= name. GPT: the
// header in LBA 1, then an array of entries; MBR: the disk signature the
// kernel turns into "SSSSSSSS-PP".
const (
	guidLen = 16 // bytes of a GPT GUID

	gptSignature      = "EFI PART"
	gptEntriesLBAOff  = 72 // uint64
	gptNumEntriesOff  = 80 // uint32
	gptEntrySizeOff   = 84 // uint32
	gptHeaderMinLen   = 92
	gptEntryTypeOff   = 0
	gptEntryGUIDOff   = 16
	gptEntryNameOff   = 56
	gptEntryNameLen   = 72 // 36 UTF-16 code units
	gptEntryMinSize   = 128
	gptMaxEntriesSize = 1 << 20

	mbrLen          = 512
	mbrSignatureOff = 440 // uint32, little-endian
	mbrBootSigOff   = 510 // 0x55 0xAA
	mbrPartTypeOff  = 446 + 4
	mbrTypeGPT      = 0xEE // protective MBR in front of a GPT
)

// partTable is what cfs-init knows about a disk's partitions.
type partTable struct {
	Kind    string    // "gpt", "mbr" or "" (none recognised)
	Entries []gptPart // GPT: index i is partition i+1
	DiskSig uint32    // MBR disk signature
}

type gptPart struct {
	Used bool
	GUID string // unique partition GUID, lower case
	Name string
}

// partUUID returns the PARTUUID of partition n (1-based), "" if unknown.
func (t *partTable) partUUID(n int) string {
	switch t.Kind {
	case "gpt":
		if n >= 1 && n <= len(t.Entries) && t.Entries[n-1].Used {
			return t.Entries[n-1].GUID
		}
	case "mbr":
		if t.DiskSig != 0 && n >= 1 {
			return fmt.Sprintf("%08x-%02x", t.DiskSig, n)
		}
	}
	return ""
}

// partName returns the GPT name of partition n, "" if unknown.
func (t *partTable) partName(n int) string {
	if t.Kind == "gpt" && n >= 1 && n <= len(t.Entries) && t.Entries[n-1].Used {
		return t.Entries[n-1].Name
	}
	return ""
}

// readPartTable reads the partition table of a disk whose logical blocks
// are lbs bytes. It trusts nothing it reads: every count and offset is
// bounded before use. Only the primary GPT is read, and its checksums are
// not verified; the kernel has already chosen the partitions, cfs-init
// only names them.
func readPartTable(r io.ReaderAt, lbs int64) (*partTable, error) {
	if lbs < mbrLen || lbs > 1<<16 {
		lbs = mbrLen
	}
	mbr := make([]byte, mbrLen)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return &partTable{}, nil
		}
		return nil, err
	}
	if t, err := readGPT(r, lbs); err != nil || t != nil {
		return t, err
	}
	if mbr[mbrBootSigOff] != 0x55 || mbr[mbrBootSigOff+1] != 0xAA || mbr[mbrPartTypeOff] == mbrTypeGPT {
		return &partTable{}, nil
	}
	return &partTable{Kind: "mbr", DiskSig: binary.LittleEndian.Uint32(mbr[mbrSignatureOff:])}, nil
}

// readGPT returns nil, nil when LBA 1 holds no GPT header.
func readGPT(r io.ReaderAt, lbs int64) (*partTable, error) {
	hdr := make([]byte, gptHeaderMinLen)
	if _, err := r.ReadAt(hdr, lbs); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	if string(hdr[:len(gptSignature)]) != gptSignature {
		return nil, nil
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[gptEntriesLBAOff:])
	num := int64(binary.LittleEndian.Uint32(hdr[gptNumEntriesOff:]))
	size := int64(binary.LittleEndian.Uint32(hdr[gptEntrySizeOff:]))
	if size < gptEntryMinSize || size%8 != 0 || num*size > gptMaxEntriesSize ||
		entriesLBA < 2 || entriesLBA > 1<<40 {
		return nil, fmt.Errorf("GPT header: implausible partition entry array (LBA %d, %d entries of %d bytes)", entriesLBA, num, size)
	}
	buf := make([]byte, num*size)
	n, err := r.ReadAt(buf, int64(entriesLBA)*lbs)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("GPT partition entries: %w", err)
	}
	t := &partTable{Kind: "gpt"}
	for i := int64(0); (i+1)*size <= int64(n); i++ {
		e := buf[i*size : (i+1)*size]
		var p gptPart
		if !allZero(e[gptEntryTypeOff : gptEntryTypeOff+guidLen]) {
			p = gptPart{Used: true, GUID: formatGUID(e[gptEntryGUIDOff : gptEntryGUIDOff+guidLen]),
				Name: utf16Name(e[gptEntryNameOff : gptEntryNameOff+gptEntryNameLen])}
		}
		t.Entries = append(t.Entries, p)
	}
	return t, nil
}

// formatGUID spells a GPT GUID: its first three fields are stored little
// endian, the rest in order.
func formatGUID(b []byte) string {
	if allZero(b) {
		return ""
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// utf16Name decodes a NUL-padded UTF-16LE partition name.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.ToValidUTF8(string(utf16.Decode(u)), "\uFFFD")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
