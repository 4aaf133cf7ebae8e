package erofs

import (
	"bytes"
	"errors"
	"io"
	"strings"
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

// TestWriteRefusesXattrsOverBudget: trees from any source (not only dump
// files, whose parser checks this too) are held to upstream's per-node
// xattr budget, so the inode's xattr area stays representable.
func TestWriteRefusesXattrsOverBudget(t *testing.T) {
	root := NewDirectory("", 0o755)
	f := &Node{Name: "f", Mode: ModeReg | 0o644, Nlink: 1}
	f.Xattrs = []Xattr{{"user.a", strings.Repeat("x", 20000)}, {"user.b", strings.Repeat("y", 20000)}}
	if err := root.AddChild(f); err != nil {
		t.Fatal(err)
	}
	err := Write(io.Discard, root, DefaultWriteOptions)
	if !errors.Is(err, ErrXattrTooLong) || !strings.Contains(err.Error(), "/f") {
		t.Fatalf("got %v, want ErrXattrTooLong naming /f", err)
	}
	f.Xattrs = f.Xattrs[:1]
	if err := Write(io.Discard, root, DefaultWriteOptions); err != nil {
		t.Fatalf("one 20000-byte xattr: %v", err)
	}
}
