package repo

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/mounttest"
	"github.com/cfs-deploy/cfs-deploy/tests/treecmp"
	"golang.org/x/sys/unix"
)

// TestMountPointInTree checks the one-file-system rule: a filesystem
// mounted inside the committed directory is not entered; its mount point
// is recorded as an empty directory.
func TestMountPointInTree(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "before"), "x", 0o644)
	writeFile(t, filepath.Join(src, "tmp", "hidden-by-the-mount"), "y", 0o644)
	writeFile(t, filepath.Join(src, "zz", "after"), strings.Repeat("z", 100), 0o644)
	tmp := filepath.Join(src, "tmp")
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "mode=0750,uid=12,gid=34"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	mounttest.UnmountLater(t, tmp)
	writeFile(t, filepath.Join(tmp, "on-tmpfs"), strings.Repeat("t", 1000), 0o644)
	os.Mkdir(filepath.Join(tmp, "subdir"), 0o755)
	setAllTimes(t, src, 1700000000)

	e.commit("main", src)
	ents := e.ls("main", "/tmp")
	if len(ents) != 0 {
		t.Errorf("ls main /tmp: %+v, want an empty directory", ents)
	}
	root := e.ls("main", "/")
	var names []string
	for _, en := range root {
		names = append(names, en.Path)
		if en.Path == "/tmp" && (en.Type != "directory" || en.Mode != "0750" || en.UID != 12 || en.GID != 34) {
			t.Errorf("the mount point is recorded as %+v, want the mounted directory's own metadata", en)
		}
	}
	if strings.Join(names, " ") != "/before /tmp /zz" {
		t.Errorf("root entries %q", names)
	}
	treecmp.Compare(t, src, e.mount("main"), treecmp.Options{EmptyDirs: map[string]bool{"tmp": true}})

	// The rule is documented where an operator looks.
	help := strings.Join(strings.Fields(e.ok("commit", "--help")), " ")
	if !strings.Contains(help, "--one-file-system") || !strings.Contains(help, "empty directory") {
		t.Errorf("commit --help does not explain the mount point rule:\n%s", help)
	}
}

// writeOnlySysfsFile returns a sysfs file that even root cannot open for
// reading (kernfs refuses files without a show method), or "".
func writeOnlySysfsFile() string {
	for _, base := range []string{"/sys/kernel", "/sys/module", "/sys/devices"} {
		var found string
		filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
			if found != "" || err != nil {
				return filepath.SkipDir
			}
			if strings.Count(p, "/") > 6 && fi.IsDir() {
				return filepath.SkipDir
			}
			if fi.Mode().IsRegular() && fi.Mode().Perm() == 0o200 && fi.Size() > 64 {
				if f, err := os.Open(p); err == nil {
					f.Close()
				} else {
					found = p
				}
			}
			return nil
		})
		if found != "" {
			return found
		}
	}
	return ""
}

// TestUnreadableFile commits a tree with a file that cannot be read (as
// root, DAC is no obstacle: the file is a bind mount of a write-only sysfs
// attribute). The commit must fail, name the file, and leave the branch
// alone.
func TestUnreadableFile(t *testing.T) {
	needRoot(t)
	sysfsFile := writeOnlySysfsFile()
	if sysfsFile == "" {
		t.Skip("no write-only sysfs attribute found to make an unreadable file")
	}
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "ok"), "fine", 0o644)
	before, _ := e.commit("main", src)
	victim := filepath.Join(src, "dir", "unreadable")
	writeFile(t, victim, "placeholder", 0o644)
	if err := unix.Mount(sysfsFile, victim, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount %s: %v", sysfsFile, err)
	}
	mounttest.UnmountLater(t, victim)
	if _, err := os.ReadFile(victim); err == nil {
		t.Skip("the bind-mounted file is readable after all")
	}

	r := e.fails("commit", "--branch", "main", src)
	if !strings.Contains(r.stderr, victim) && !strings.Contains(r.stderr, "dir/unreadable") {
		t.Errorf("the error does not name the unreadable file: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("the error does not say why: %q", r.stderr)
	}
	if got := e.tip("main"); got != before {
		t.Errorf("branch moved to %s after a failed commit", got)
	}
	if n := len(e.commits()); n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
	e.fsckClean()
}

// TestNonUTF8Names commits names and symlink targets that are not valid
// UTF-8, from a directory and from GNU tar, and checks they come back
// byte for byte.
func TestNonUTF8Names(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	bad := []string{"latin1-caf\xe9", "\xff\xfe", "\xc3\x28-broken-sequence", "ok-\xe2\x82\xac-euro", "nl-\n-tab-\t"}
	for i, n := range bad {
		writeFile(t, filepath.Join(src, n), strings.Repeat(fmt.Sprint(i), 100*i+1), 0o644)
		writeFile(t, filepath.Join(src, "dir-\xfe", n), "inline", 0o644)
	}
	os.Symlink("target-\xff\xfe", filepath.Join(src, "link-\xe9"))
	setAllTimes(t, src, 1700000000)

	dirCommit, _ := e.commit("dir", src)
	treecmp.Compare(t, src, e.mount("dir"), treecmp.Options{})
	out := e.ok("ls", "-R", "dir")
	if strings.Count(out, "\n") != 2*len(bad)+2 {
		t.Errorf("ls -R lists %d entries, want %d:\n%s", strings.Count(out, "\n"), 2*len(bad)+2, out)
	}
	if got := e.ok("cat", "dir", "/latin1-caf\xe9"); got != "0" {
		t.Errorf("cat of a latin-1 name: %q", got)
	}

	if _, err := exec.LookPath("tar"); err != nil {
		return
	}
	tarFile := filepath.Join(t.TempDir(), "names.tar")
	if out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "-cf", tarFile, "-C", src, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tarCommit, _ := e.commit("tar", "", "--from-tar", tarFile)
	if d := e.ok("diff", dirCommit, tarCommit); d != "" {
		t.Errorf("the tar commit differs from the directory commit:\n%s", d)
	}
}

// TestDiskFull commits a tree larger than the free space of the
// repository's filesystem (a 20 MiB ext4 on a loop device): the commit
// fails with a clear error, nothing is visible of it, fsck is clean, and
// after gc the repository works again.
func TestDiskFull(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	mnt := filepath.Join(dir, "disk")
	os.Mkdir(mnt, 0o755)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v\n%s", err, out)
	}
	mounttest.UnmountLater(t, mnt)

	e := newEnvAt(t, filepath.Join(mnt, "sysroot"))
	small := filepath.Join(t.TempDir(), "small")
	writeFile(t, filepath.Join(small, "f"), strings.Repeat("small", 100), 0o644)
	before, beforeImage := e.commit("main", small)

	big := filepath.Join(t.TempDir(), "big")
	for i := range 40 {
		b := make([]byte, 1<<20)
		rand.Read(b)
		writeFile(t, filepath.Join(big, fmt.Sprintf("f%02d", i)), string(b), 0o644)
	}
	check := func(what string, r result) {
		t.Helper()
		if !strings.Contains(r.stderr, "no space left on device") {
			t.Errorf("%s: the error does not say the disk is full: %q", what, r.stderr)
		}
		if got := e.tip("main"); got != before {
			t.Errorf("%s: branch moved to %s", what, got)
		}
		if got := e.commits(); len(got) != 1 || got[0] != before {
			t.Errorf("%s: commits %q, want only %s", what, got, before)
		}
		rep := e.fsckClean()
		if rep.Images != 1 || rep.Commits != 1 {
			t.Errorf("%s: fsck sees %d images and %d commits, want 1 and 1", what, rep.Images, rep.Commits)
		}
		if out := e.ok("log", "main"); strings.Count(out, "commit ") != 1 || !strings.Contains(out, beforeImage) {
			t.Errorf("%s: log:\n%s", what, out)
		}
	}
	check("commit of a directory", e.fails("commit", "--branch", "main", big))

	tarFile := filepath.Join(t.TempDir(), "big.tar")
	if out, err := exec.Command("tar", "-cf", tarFile, "-C", big, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	check("commit of a tar stream", e.fails("commit", "--branch", "main", "--from-tar", tarFile))

	// gc frees the partial objects; a commit that fits then works.
	var st unix.Statfs_t
	unix.Statfs(mnt, &st)
	freeBefore := st.Bavail * uint64(st.Bsize)
	e.ok("gc")
	unix.Statfs(mnt, &st)
	if free := st.Bavail * uint64(st.Bsize); free < freeBefore+8<<20 {
		t.Errorf("gc freed only %d bytes (%d -> %d)", free-freeBefore, freeBefore, free)
	}
	for i := 10; i < 40; i++ {
		os.Remove(filepath.Join(big, fmt.Sprintf("f%02d", i)))
	}
	next, _ := e.commit("main", big)
	if e.parent(next) != before {
		t.Errorf("the commit after the full disk has parent %s", e.parent(next))
	}
	if rep := e.fsckClean(); rep.TempFiles != 0 {
		t.Errorf("%d temporary files after gc", rep.TempFiles)
	}
}

// tarStream writes hdrs (with content for regular files) as a PAX tar.
func tarStream(t *testing.T, entries ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i < len(entries); i++ {
		h := entries[i].(*tar.Header)
		var body []byte
		if h.Typeflag == tar.TypeReg {
			i++
			body = entries[i].([]byte)
			h.Size = int64(len(body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return b.Bytes()
}

func TestTarRefused(t *testing.T) {
	e := newEnv(t)
	good := tarStream(t, &tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644}, []byte("f"))
	before, _ := parseCommit(t, e.runIn(good, "commit", "--branch", "main", "--from-tar", "-").stdout)
	bigBody := bytes.Repeat([]byte("big content "), 10000)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   []string
	}{
		{"dotdot path", tarStream(t,
			&tar.Header{Typeflag: tar.TypeReg, Name: "ok", Mode: 0o644}, []byte("ok"),
			&tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Mode: 0o644}, []byte("x")),
			[]string{`"../escape"`, "escapes the root"}},
		{"inner dotdot", tarStream(t,
			&tar.Header{Typeflag: tar.TypeDir, Name: "a/", Mode: 0o755},
			&tar.Header{Typeflag: tar.TypeReg, Name: "a/../../../etc/passwd", Mode: 0o644}, []byte("x")),
			[]string{`"a/../../../etc/passwd"`, "escapes the root"}},
		{"hard link escaping", tarStream(t,
			&tar.Header{Typeflag: tar.TypeLink, Name: "shadow", Linkname: "../../etc/shadow"}),
			[]string{`"shadow"`, `hard link target "../../etc/shadow"`, "escapes the root"}},
		{"hard link to a missing file", tarStream(t,
			&tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "/etc/shadow"}),
			[]string{`"h"`, `hard link target "/etc/shadow"`, "no such file"}},
		{"file below a symlink", tarStream(t,
			&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "/etc"},
			&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte("x")),
			[]string{`"etc/passwd"`, "not a directory"}},
		{"truncated in a file", tarStream(t,
			&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644}, bigBody)[:60000],
			[]string{"unexpected EOF"}},
		{"truncated in a header", tarStream(t,
			&tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0o644}, []byte("a"),
			&tar.Header{Typeflag: tar.TypeReg, Name: "b", Mode: 0o644}, []byte("b"))[:1024+200],
			[]string{"unexpected EOF"}},
		{"not a tar", []byte(strings.Repeat("garbage!", 200)), []string{"tar"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			r := e.runIn(tc.stream, "commit", "--branch", "main", "--from-tar", "-")
			if r.code != 1 {
				t.Fatalf("want exit 1: %v", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error %q does not contain %q", r.stderr, w)
				}
			}
			if got := e.tip("main"); got != before {
				t.Errorf("branch moved to %s", got)
			}
			if rep := e.fsckClean(); rep.TempFiles != 0 || rep.Commits != 1 {
				t.Errorf("after a refused stream: %d temporary files, %d commits", rep.TempFiles, rep.Commits)
			}
		})
	}
}

// TestTarPathsInside checks what a tar stream may do: absolute paths are
// taken inside the root, and symlink targets, absolute or pointing up,
// are stored as they are.
func TestTarPathsInside(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	stream := tarStream(t,
		&tar.Header{Typeflag: tar.TypeDir, Name: "/etc/", Mode: 0o755},
		&tar.Header{Typeflag: tar.TypeReg, Name: "/etc/hostname", Mode: 0o644}, []byte("host\n"),
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/passwd-link", Linkname: "/etc/passwd"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: "../../../../outside"},
		&tar.Header{Typeflag: tar.TypeLink, Name: "hostname-link", Linkname: "/etc/hostname"},
	)
	r := e.runIn(stream, "commit", "--branch", "main", "--from-tar", "-")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	if got := e.ok("cat", "main", "/etc/hostname"); got != "host\n" {
		t.Errorf("/etc/hostname: %q", got)
	}
	mnt := e.mount("main")
	for link, want := range map[string]string{"etc/passwd-link": "/etc/passwd", "up": "../../../../outside"} {
		if got, err := os.Readlink(filepath.Join(mnt, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}
	a, _ := os.Stat(filepath.Join(mnt, "etc/hostname"))
	b, _ := os.Stat(filepath.Join(mnt, "hostname-link"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("hostname-link is not a hard link of /etc/hostname")
	}
	// Directory commits store absolute symlink targets as they are too.
	src := t.TempDir()
	os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(src, "localtime"))
	e.commit("dir", src)
	if ents := e.ls("dir", "/localtime"); len(ents) != 1 || ents[0].Target != "/usr/share/zoneinfo/UTC" {
		t.Errorf("ls /localtime: %+v", ents)
	}
}
