package erofs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzReadImage/seed-* from fuzzSeedTrees")

// fuzzSeedTrees are small trees whose images seed FuzzReadImage.
func fuzzSeedTrees(t testing.TB) map[string]*Node {
	empty := NewDirectory("", 0o755)

	mixed := NewDirectory("", 0o755)
	mixed.Xattrs = []Xattr{{"user.a", "1"}, {"security.selinux", "l"}}
	sub := NewDirectory("d", 0o700)
	mixed.AddChild(sub)
	f := &Node{Name: "f", Mode: ModeReg | 0o644, Nlink: 2, Content: []byte("content\n"), Size: 8,
		Xattrs: []Xattr{{"user.a", "1"}, {"trusted.overlay.x", "esc"}}}
	sub.AddChild(f)
	mixed.AddChild(&Node{Name: "hl", Mode: f.Mode, LinkTo: f})
	mixed.AddChild(&Node{Name: "ext", Mode: ModeReg | 0o644, Nlink: 1, Size: 5000, Payload: "aa/bb",
		Digest: bytes.Repeat([]byte{7}, 32), Mtime: Timespec{Sec: 5, Nsec: 6}})
	mixed.AddChild(&Node{Name: "s", Mode: ModeSymlink | 0o777, Nlink: 1, Payload: "d/f", Size: 3})
	mixed.AddChild(&Node{Name: "c", Mode: ModeChr | 0o600, Nlink: 1, Rdev: 0x105})
	mixed.AddChild(&Node{Name: "w", Mode: ModeChr | 0o600, Nlink: 1})
	mixed.AddChild(&Node{Name: "p", Mode: ModeFifo | 0o600, Nlink: 1, UID: 1 << 20})

	return map[string]*Node{"empty": empty, "mixed": mixed, "corrupt-base": corruptTree(t)}
}

// FuzzReadImage: ReadImage never panics and only returns *FormatError;
// whenever it accepts an image, the tree can be written, the result read
// back, and writing that again gives the same bytes.
func FuzzReadImage(f *testing.F) {
	for _, root := range fuzzSeedTrees(f) {
		f.Add(mustWrite(f, root, DefaultWriteOptions))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ReadImage(data)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FormatError: %v", err, err)
			}
			n := 0
			for _, k := range []error{ErrTruncated, ErrBadMagic, ErrUnsupported, ErrCorrupt, ErrLoop, ErrLimit} {
				if errors.Is(err, k) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error matches %d kinds: %v", n, err)
			}
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, im.Root, pinned(im)); err != nil {
			t.Fatalf("image accepted, but its tree cannot be written: %v", err)
		}
		im2, err := ReadImage(buf.Bytes())
		if err != nil {
			t.Fatalf("reading the rewritten image: %v", err)
		}
		var buf2 bytes.Buffer
		if err := Write(&buf2, im2.Root, pinned(im2)); err != nil {
			t.Fatalf("second write: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
			t.Fatalf("write(read(write(tree))) differs from write(tree)")
		}
	})
}

// TestUpdateFuzzSeeds writes the seed images as corpus files when run
// with -update-fuzz-seeds.
func TestUpdateFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("run with -update-fuzz-seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadImage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, root := range fuzzSeedTrees(t) {
		data := mustWrite(t, root, DefaultWriteOptions)
		text := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
