package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ExtBlockSize is the block size of the file systems MakeExt4 makes. Without
// -b, mke2fs picks 1 KiB for small images; fs-verity wants 4 KiB pages.
const ExtBlockSize = 4096

// MakeExt4 makes a raw ext4 image of the given size (mkfs.ext4 syntax, e.g.
// "64M") labelled cfsroot, holding files (relative path -> content; parent
// directories are created). With verity the file system has the verity
// feature, so a kernel with fs-verity can enable it on its files.
func MakeExt4(t testing.TB, size string, files map[string]string, verity bool) string {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return MakeExt4FromDir(t, size, src, verity)
}

// MakeExt4FromDir is MakeExt4 with the contents copied from the directory src
// (owners, modes, symlinks and xattrs as mkfs.ext4 -d copies them).
func MakeExt4FromDir(t testing.TB, size, src string, verity bool) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		skipOrFail(t, "mkfs.ext4 not found (Debian package e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	args := []string{"-q", "-F", "-b", strconv.Itoa(ExtBlockSize)}
	if verity {
		args = append(args, "-O", "verity")
	}
	args = append(args, "-L", "cfsroot", "-d", src, img, size)
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return img
}

// FlipByte inverts every bit of the byte at offset off of the file img, as
// offline tampering would. The file system in img must not be mounted.
func FlipByte(img string, off int64) error {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		f.Close()
		return fmt.Errorf("reading byte %d of %s: %w", off, img, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return fmt.Errorf("writing byte %d of %s: %w", off, img, err)
	}
	return f.Close()
}

// Debugfs runs one debugfs(8) request, read-only, on the ext2/3/4 image img
// and returns its output. debugfs reports most failures on stderr with exit
// status 0, so anything on stderr besides its version banner is an error.
func Debugfs(img, request string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("debugfs", "-R", request, img)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var complaints []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			complaints = append(complaints, l)
		}
	}
	if err != nil || len(complaints) > 0 {
		return stdout.String(), fmt.Errorf("debugfs -R %q %s: %v %s", request, img, err, strings.Join(complaints, "; "))
	}
	return stdout.String(), nil
}

// ReadFileFromExt4 returns the content of path (absolute, in the file
// system) from the image img without mounting it.
func ReadFileFromExt4(img, path string) ([]byte, error) {
	out, err := Debugfs(img, "cat "+path)
	if err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// DataBlocks returns the numbers of the file system blocks that hold the data
// of path, in file order; ExtBlockSize*block is the byte offset in img.
// debugfs's "blocks" also lists, after the data, the Merkle tree and
// descriptor that fs-verity keeps past the end of the file; these are left
// out, so flipping a byte in any block returned here corrupts file data.
func DataBlocks(img, path string) ([]int64, error) {
	stat, err := Debugfs(img, "stat "+path)
	if err != nil {
		return nil, err
	}
	m := statSize.FindStringSubmatch(stat)
	if m == nil {
		return nil, fmt.Errorf("debugfs stat %s: no size in %q", path, firstLine(stat))
	}
	size, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("debugfs stat %s: size %q: %v", path, m[1], err)
	}
	out, err := Debugfs(img, "blocks "+path)
	if err != nil {
		return nil, err
	}
	var blocks []int64
	for _, f := range strings.Fields(out) {
		b, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("debugfs blocks %s: %q is not a block number", path, f)
		}
		blocks = append(blocks, b)
	}
	n := (size + ExtBlockSize - 1) / ExtBlockSize
	if int64(len(blocks)) < n {
		return nil, fmt.Errorf("debugfs blocks %s: %d blocks for %d bytes", path, len(blocks), size)
	}
	return blocks[:n], nil
}

// statSize finds the file size in debugfs's "stat" output ("...  Size: 5000").
var statSize = regexp.MustCompile(`\bSize:\s+(\d+)`)

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
