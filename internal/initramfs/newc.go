package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
