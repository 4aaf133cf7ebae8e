package erofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
)

// goldenAsset is an upstream asset with the write options its image was
// made with.
type goldenAsset struct {
	conformance.Asset
	opts   WriteOptions // the pinned version, else the defaults
	pinned bool
}

func loadGoldenAssets(t testing.TB) []goldenAsset {
	t.Helper()
	var out []goldenAsset
	for _, a := range conformance.Assets(t) {
		g := goldenAsset{Asset: a, opts: DefaultWriteOptions}
		if a.Version >= 0 {
			g.opts, g.pinned = WriteOptions{MinVersion: a.Version, MaxVersion: a.Version}, true
		}
		out = append(out, g)
	}
	return out
}

func writeImage(t testing.TB, root *Node, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, root, opts); err != nil {
		t.Fatalf("write: %v", err)
	}
	return buf.Bytes()
}

// TestConformanceGolden builds every upstream asset and compares the image's
// sha256 with upstream's, then checks the two round trips upstream checks:
// image -> tree -> image, and image -> dump text -> image.
func TestConformanceGolden(t *testing.T) {
	for _, a := range loadGoldenAssets(t) {
		t.Run(a.Name, func(t *testing.T) {
			root, err := ParseDump(bytes.NewReader(a.Dump), DumpOptions{Strict: a.Strict})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			img := writeImage(t, root, a.opts)
			sum := sha256.Sum256(img)
			if got := hex.EncodeToString(sum[:]); got != a.SHA256 {
				t.Fatalf("image sha256 %s, upstream %s (%d bytes)", got, a.SHA256, len(img))
			}

			back, err := ReadImage(img)
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			pin := WriteOptions{MinVersion: back.Version, MaxVersion: back.Version}
			if again := writeImage(t, back.Root, pin); !bytes.Equal(again, img) {
				t.Fatalf("image -> tree -> image differs")
			}

			var dump bytes.Buffer
			if err := WriteDump(&dump, back.Root, DumpPrintOptions{}); err != nil {
				t.Fatalf("dump: %v", err)
			}
			reparsed, err := ParseDump(&dump, DumpOptions{Strict: true})
			if err != nil {
				t.Fatalf("parse printed dump: %v", err)
			}
			opts := a.opts
			if !a.pinned {
				opts = DefaultWriteOptions
			}
			if again := writeImage(t, reparsed, opts); !bytes.Equal(again, img) {
				t.Fatalf("image -> dump -> image differs")
			}
		})
	}
}

// TestConformanceShouldFail checks that every should-fail asset is refused
// with an error that carries a line number.
func TestConformanceShouldFail(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(conformance.Dir(t), "should-fail-*.dump"))
	if len(paths) == 0 {
		t.Fatal("no should-fail assets found")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			root, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: true})
			if err == nil {
				// Some inputs are only refused when written, as upstream
				// refuses them in lcfs_write_to.
				err = Write(io.Discard, root, DefaultWriteOptions)
				if err == nil {
					t.Fatalf("accepted")
				}
				return
			}
			if !strings.Contains(err.Error(), "line ") {
				t.Errorf("error does not name the line: %v", err)
			}
		})
	}
}
