package treecmp

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// sameContent compares two files a chunk at a time (one may be a 1 GiB
// sparse file) through the two buffers, which have the same size; b is
// the one read through the mount.
func sameContent(a, b string, ba, bb []byte) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return fmt.Errorf("open through the mount: %w", err)
	}
	defer fb.Close()
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
			return fmt.Errorf("read through the mount at %d: %w", off, eb)
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("content differs in the %d bytes from %d", max(na, nb), off)
		}
		if ea != nil {
			return nil
		}
		off += int64(na)
	}
}
