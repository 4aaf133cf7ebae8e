package mount

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFIFOImageRefusedWithoutHanging: a FIFO planted under an image's name
// must be refused at once; a blocking open would hang a boot forever.
func TestFIFOImageRefusedWithoutHanging(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "image")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Mount(filepath.Join(dir, "mnt"), Options{Image: fifo, ObjectDirs: []string{dir}}) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotComposefs) {
			t.Fatalf("got %v, want ErrNotComposefs", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Mount of a FIFO image hangs")
	}
}
