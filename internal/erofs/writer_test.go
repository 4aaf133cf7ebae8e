package erofs

import (
	"bytes"
	"testing"
)

// TestWriteEmptyRoot checks the smallest image against the layout derived
// from the format rules: the root, its 256 whiteout stubs and one directory
// block.
func TestWriteEmptyRoot(t *testing.T) {
	root := NewDirectory("", 0o755)
	var buf bytes.Buffer
	if err := Write(&buf, root, DefaultWriteOptions); err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	if len(img) != 16384 {
		t.Fatalf("image size %d, want 16384", len(img))
	}
	sb := img[SuperblockOffset:]
	if got := le.Uint16(sb[sbRootNid:]); got != 36 {
		t.Errorf("root nid %d, want 36", got)
	}
	if got := le.Uint64(sb[sbInos:]); got != 257 {
		t.Errorf("inos %d, want 257", got)
	}
	if got := le.Uint32(sb[sbXattrBlkaddr:]); got != 2 {
		t.Errorf("xattr_blkaddr %d, want 2", got)
	}
	root36 := img[36*32:]
	if got := le.Uint16(root36[inoXattrIcount:]); got != 6 {
		t.Errorf("root xattr icount %d, want 6", got)
	}
	if got := le.Uint32(root36[inoU:]); got != 3 {
		t.Errorf("root blkaddr %d, want 3", got)
	}
}
