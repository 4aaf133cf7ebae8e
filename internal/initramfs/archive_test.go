package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// File is one member of an archive read back by readArchive.
type File struct {
	Name                 string
	Ino, Mode, UID, GID  uint32
	NLink, MTime         uint32
	RdevMajor, RdevMinor uint32
	Data                 []byte // contents; the target of a symlink
}

// readArchive reads an image as Build writes it, plain or compressed with
// gzip or zstd (told by magic number), with u-root's newc reader: an
// implementation other than the writer under test. The archive must end
// with the trailer.
func readArchive(r io.Reader) ([]File, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(4)
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		defer z.Close()
		src = z
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		src = d
	}
	raw, err := io.ReadAll(src)
	if err != nil {
		return nil, err
	}
	// u-root's reader takes a truncated archive's end for the trailer.
	if tail := raw[max(0, len(raw)-128):]; !bytes.Contains(tail, []byte(cpio.Trailer+"\x00")) {
		return nil, errors.New("archive does not end with the trailer")
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		return nil, err
	}
	files := make([]File, 0, len(recs))
	for _, r := range recs {
		data, err := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		if err != nil || uint64(len(data)) != r.FileSize {
			return nil, fmt.Errorf("%s: %d of %d bytes: %v", r.Name, len(data), r.FileSize, err)
		}
		files = append(files, File{Name: r.Name, Ino: uint32(r.Ino), Mode: uint32(r.Mode), UID: uint32(r.UID),
			GID: uint32(r.GID), NLink: uint32(r.NLink), MTime: uint32(r.MTime),
			RdevMajor: uint32(r.Rmajor), RdevMinor: uint32(r.Rminor), Data: data})
	}
	return files, nil
}
