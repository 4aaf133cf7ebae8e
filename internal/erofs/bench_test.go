package erofs

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
)

func loadCS9(b *testing.B) []byte {
	dump, err := conformance.ReadMaybeGzip(filepath.Join(conformance.Dir(b), "cs9-x86_64-developer.dump.gz"))
	if err != nil {
		b.Skipf("conformance asset missing: %v", err)
	}
	return dump
}

// BenchmarkFromFileCS9 is mkcomposefs --from-file on the 64,000-entry
// developer dump: parse, then write the image.
func BenchmarkFromFileCS9(b *testing.B) {
	dump := loadCS9(b)
	b.SetBytes(int64(len(dump)))
	b.ReportAllocs()
	for b.Loop() {
		root, err := ParseDump(bytes.NewReader(dump), DumpOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := Write(io.Discard, root, DefaultWriteOptions); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteCS9 isolates the writer.
func BenchmarkWriteCS9(b *testing.B) {
	root, err := ParseDump(bytes.NewReader(loadCS9(b)), DumpOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Write(io.Discard, root, DefaultWriteOptions); err != nil {
			b.Fatal(err)
		}
	}
}
