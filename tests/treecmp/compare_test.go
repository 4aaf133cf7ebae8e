package treecmp

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// recorder collects the errors Compare reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }

// makeTree makes the same small tree each time it is called.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "sub/file"), []byte("content"), 0o644))
	must(os.Link(filepath.Join(dir, "sub/file"), filepath.Join(dir, "link")))
	must(os.Symlink("sub/file", filepath.Join(dir, "symlink")))
	must(unix.Lsetxattr(filepath.Join(dir, "sub"), "user.test", []byte("x"), 0))
	for _, rel := range []string{"sub/file", "symlink", "sub", "."} {
		ts := []unix.Timespec{{Sec: 1_700_000_000, Nsec: 5}, {Sec: 1_700_000_000, Nsec: 5}}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, rel), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func TestCompare(t *testing.T) {
	src, mnt := t.TempDir(), t.TempDir()
	makeTree(t, src)
	makeTree(t, mnt)
	if err := unix.Lsetxattr(src, "user.probe", nil, 0); err != nil {
		t.Skipf("no user xattrs on %s: %v", src, err)
	}
	unix.Lremovexattr(src, "user.probe")

	r := &recorder{TB: t}
	if n := Compare(r, src, mnt, Options{}); n != 5 || len(r.errs) != 0 {
		t.Fatalf("equal trees: %d entries, errors %q", n, r.errs)
	}
	r.errs = nil
	Compare(r, src, mnt, Options{HardLinksDropped: true})
	if len(r.errs) != 3 || !strings.Contains(r.errs[0], "/link: nlink 2, want 1") || !strings.Contains(r.errs[2], "/sub/file: shares inode") {
		t.Errorf("hard links where the image keeps none: %q", r.errs)
	}

	os.WriteFile(filepath.Join(mnt, "sub/file"), []byte("contenT"), 0o644)
	os.Chmod(filepath.Join(mnt, "sub/file"), 0o600)
	unix.Lsetxattr(filepath.Join(mnt, "sub"), "user.test", []byte("y"), 0)
	os.WriteFile(filepath.Join(mnt, "extra"), nil, 0o644)
	r.errs = nil
	Compare(r, src, mnt, Options{})
	got := strings.Join(r.errs, "\n")
	for _, want := range []string{
		"/.: directory entries differ: only in the mount [extra]",
		"/sub: xattrs differ",
		"/sub/file: mode 0600, want 0644",
		"/sub/file: content differs",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors\n%s\nlack %q", got, want)
		}
	}
}
