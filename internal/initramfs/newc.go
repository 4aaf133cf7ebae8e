package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/zstd"
)

// The "newc" cpio format (magic 070701), the one the kernel unpacks into its
// rootfs: a 110-byte header of ASCII hex fields, the NUL-terminated name
// padded to 4 bytes, the data padded to 4 bytes; "TRAILER!!!" ends it.
// The checksum field is 0 (070702 would carry a sum; the kernel does not
// need it).

const (
	newcMagic   = "070701"
	newcHdrSize = 110
	trailerName = "TRAILER!!!"

	// Unix st_mode file types.
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
	modeType = 0o170000

	maxNameSize = 4096
)

// header is one newc header.
type header struct {
	Ino, Mode, UID, GID, NLink, MTime uint32
	Size                              uint32
	DevMajor, DevMinor                uint32
	RdevMajor, RdevMinor              uint32
	Name                              string
}

// newcWriter writes newc records and counts the bytes.
type newcWriter struct {
	w io.Writer
	n int64
}

func (cw *newcWriter) write(p []byte) error {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return err
}

func (cw *newcWriter) pad() error {
	if r := cw.n % 4; r != 0 {
		return cw.write(make([]byte, 4-r))
	}
	return nil
}

func (cw *newcWriter) writeHeader(h header) error {
	if len(h.Name)+1 > maxNameSize {
		return fmt.Errorf("name too long for cpio: %.60s...", h.Name)
	}
	var b bytes.Buffer
	b.Grow(newcHdrSize + len(h.Name) + 4)
	b.WriteString(newcMagic)
	for _, v := range []uint32{h.Ino, h.Mode, h.UID, h.GID, h.NLink, h.MTime, h.Size,
		h.DevMajor, h.DevMinor, h.RdevMajor, h.RdevMinor, uint32(len(h.Name) + 1), 0} {
		fmt.Fprintf(&b, "%08X", v)
	}
	b.WriteString(h.Name)
	b.WriteByte(0)
	if err := cw.write(b.Bytes()); err != nil {
		return err
	}
	return cw.pad()
}

// writeData copies exactly size bytes from r and pads.
func (cw *newcWriter) writeData(r io.Reader, size int64) error {
	n, err := io.CopyN(writerFunc(cw.write), r, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("file shrank to %d of %d bytes while being archived", n, size)
		}
		return err
	}
	return cw.pad()
}

func (cw *newcWriter) writeTrailer() error {
	return cw.writeHeader(header{NLink: 1, Name: trailerName})
}

type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// File is one member of an archive read back by ReadArchive.
type File struct {
	Name                 string
	Ino, Mode, UID, GID  uint32
	NLink, MTime         uint32
	RdevMajor, RdevMinor uint32
	Data                 []byte // contents; the target of a symlink
}

// MaxReadSize bounds what ReadArchive accepts (uncompressed).
const MaxReadSize = 1 << 30

// ReadArchive reads an initramfs image as Build writes it: a newc cpio,
// plain or compressed with gzip or zstd (told by magic number), up to the
// trailer. It is meant for inspection and tests: everything is held in
// memory, bounded by MaxReadSize.
func ReadArchive(r io.Reader) ([]File, error) {
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
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxReadSize))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		src = d
	}
	rd := &newcReader{r: bufio.NewReader(io.LimitReader(src, MaxReadSize))}
	var files []File
	for {
		f, err := rd.next()
		if err != nil {
			return files, err
		}
		if f.Name == trailerName {
			return files, nil
		}
		files = append(files, f)
	}
}

type newcReader struct {
	r   *bufio.Reader
	off int64
}

func (nr *newcReader) read(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(nr.r, b)
	nr.off += int64(n)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

func (nr *newcReader) skipPad() error {
	if r := nr.off % 4; r != 0 {
		_, err := nr.read(int(4 - r))
		return err
	}
	return nil
}

func (nr *newcReader) next() (File, error) {
	at := nr.off
	hdr, err := nr.read(newcHdrSize)
	if err != nil {
		return File{}, fmt.Errorf("cpio header at %d: %w", at, err)
	}
	if string(hdr[:6]) != newcMagic {
		return File{}, fmt.Errorf("cpio header at %d: bad magic %q", at, hdr[:6])
	}
	var v [13]uint32
	for i := range v {
		x, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return File{}, fmt.Errorf("cpio header at %d: field %d: %w", at, i, err)
		}
		v[i] = uint32(x)
	}
	nameSize, size := v[11], v[6]
	if nameSize == 0 || nameSize > maxNameSize {
		return File{}, fmt.Errorf("cpio header at %d: name size %d", at, nameSize)
	}
	name, err := nr.read(int(nameSize))
	if err != nil {
		return File{}, err
	}
	if name[len(name)-1] != 0 {
		return File{}, fmt.Errorf("cpio header at %d: name not NUL-terminated", at)
	}
	if err := nr.skipPad(); err != nil {
		return File{}, err
	}
	f := File{
		Name: string(name[:len(name)-1]), Ino: v[0], Mode: v[1], UID: v[2], GID: v[3],
		NLink: v[4], MTime: v[5], RdevMajor: v[9], RdevMinor: v[10],
	}
	// Read through a limit instead of allocating what the header claims.
	if f.Data, err = io.ReadAll(io.LimitReader(nr.r, int64(size))); err != nil {
		return File{}, fmt.Errorf("cpio %s: data: %w", f.Name, err)
	}
	nr.off += int64(len(f.Data))
	if len(f.Data) != int(size) {
		return File{}, fmt.Errorf("cpio %s: data: %w", f.Name, io.ErrUnexpectedEOF)
	}
	return f, nr.skipPad()
}
