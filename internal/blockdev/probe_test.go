package blockdev

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestProbeExt4 checks the offsets against what mkfs.ext4 writes, with a
// label holding a space, which is kept as it is.
func TestProbeExt4(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no mkfs.ext4")
	}
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	const uuid = "0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6"
	if out, err := exec.Command(mkfs, "-q", "-F", "-U", uuid, "-L", "cfs root", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	got, err := ProbeFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Filesystem{Type: "ext4", UUID: uuid, Label: "cfs root"}) {
		t.Fatalf("got %+v", got)
	}
}

// xfs and btrfs tools are not on every host; their superblocks are laid
// out by hand at the offsets their on-disk formats define.
func TestProbeSynthetic(t *testing.T) {
	id := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	const want = "deadbeef-0102-0304-0506-0708090a0b0c"
	put := func(dev []byte, off int, b []byte) { copy(dev[off:], b) }

	xfs := make([]byte, 4096)
	put(xfs, 0, []byte("XFSB"))
	put(xfs, 32, id)
	put(xfs, 108, []byte("xfsroot"))
	btrfs := make([]byte, 128<<10)
	put(btrfs, 65536+0x40, []byte("_BHRfS_M"))
	put(btrfs, 65536+0x20, id)
	put(btrfs, 65536+0x12b, []byte("btr"))
	for name, c := range map[string]struct {
		dev  []byte
		want Filesystem
	}{
		"xfs":   {xfs, Filesystem{"xfs", want, "xfsroot"}},
		"btrfs": {btrfs, Filesystem{"btrfs", want, "btr"}},
	} {
		got, err := Probe(bytes.NewReader(c.dev))
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", name, got, err, c.want)
		}
	}
}

func TestProbeUnknown(t *testing.T) {
	for name, dev := range map[string][]byte{
		"empty": nil,
		"short": make([]byte, 1030),
		"zeros": make([]byte, 1<<20),
	} {
		if _, err := Probe(bytes.NewReader(dev)); !errors.Is(err, ErrUnknown) {
			t.Errorf("%s: %v, want ErrUnknown", name, err)
		}
	}
}
