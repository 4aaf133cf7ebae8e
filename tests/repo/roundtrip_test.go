package repo

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/fulltree"
	"github.com/cfs-deploy/cfs-deploy/tests/treecmp"
)

// TestRoundTrip commits a tree with every kind of entry from the
// directory, then from GNU tar's stream of the same directory, then from
// the dump of the first image; it mounts each commit and compares it with
// the source.
func TestRoundTrip(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	tree := fulltree.Build(t, src, fulltree.Options{Sparse: !testing.Short(), ForTar: true})
	cmpOpts := treecmp.Options{Whiteouts: tree.Whiteouts, EscapedXattrs: tree.Escaped}

	start := time.Now()
	dirCommit, dirImage := e.commit("dir", src, "--subject", "from a directory")
	t.Logf("commit of the directory: %v", time.Since(start).Round(time.Millisecond))
	n := treecmp.Compare(t, src, e.mount("dir"), cmpOpts)
	t.Logf("compared %d entries", n)
	e.fsckClean()

	t.Run("gnu-tar", func(t *testing.T) {
		if _, err := exec.LookPath("tar"); err != nil {
			t.Skip("no tar")
		}
		e := *e
		e.t = t
		checkGNUTarXattrs(t, src)
		tarCmd := exec.Command("tar", "--xattrs", "--xattrs-include=*", "-cf", "-", "-C", src, ".")
		pipe, err := tarCmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var tarErr strings.Builder
		tarCmd.Stderr = &tarErr
		// The objects were just stored by the first commit: no need to
		// read them again (the default without fs-verity).
		commit := e.command("commit", "--branch", "tar", "--trust-existing", "--from-tar", "-")
		commit.Stdin = pipe
		var out, errb strings.Builder
		commit.Stdout, commit.Stderr = &out, &errb
		start := time.Now()
		if err := tarCmd.Start(); err != nil {
			t.Fatal(err)
		}
		cerr := commit.Run()
		if err := tarCmd.Wait(); err != nil {
			t.Fatalf("tar: %v\n%s", err, tarErr.String())
		}
		if cerr != nil {
			t.Fatalf("commit --from-tar -: %v\n%s", cerr, errb.String())
		}
		t.Logf("commit of GNU tar's stream: %v", time.Since(start).Round(time.Millisecond))
		tarCommit, _ := parseCommit(t, out.String())
		treecmp.Compare(t, src, e.mount("tar"), cmpOpts)
		// The two commits hold the same tree.
		if d := e.ok("diff", dirCommit, tarCommit); d != "" {
			t.Errorf("diff between the directory and the tar commit:\n%s", d)
		}
		e.fsckClean()
	})

	t.Run("dump", func(t *testing.T) {
		e := *e
		e.t = t
		dump := filepath.Join(t.TempDir(), "tree.dump")
		out, err := exec.Command(bin, "composefs-info", "dump", e.imageObject(dirImage)).Output()
		if err != nil {
			t.Fatalf("composefs-info dump: %v", err)
		}
		if err := os.WriteFile(dump, out, 0o644); err != nil {
			t.Fatal(err)
		}
		_, img := e.commit("dump", "", "--trust-existing", "--from-dump", dump)
		if img != dirImage {
			t.Errorf("commit --from-dump of the image's dump wrote image %s, want the same image %s", img, dirImage)
		}
		treecmp.Compare(t, src, e.mount("dump"), cmpOpts)

		// Into a repository without the objects: refused, nothing moves.
		other := newEnv(t)
		small := t.TempDir()
		os.WriteFile(filepath.Join(small, "f"), []byte("f"), 0o644)
		before, _ := other.commit("dump", small)
		r := other.fails("commit", "--branch", "dump", "--from-dump", dump)
		if !strings.Contains(r.stderr, "missing") {
			t.Errorf("commit --from-dump without the objects: %q should say objects are missing", r.stderr)
		}
		if got := other.tip("dump"); got != before {
			t.Errorf("branch moved from %s to %s", before, got)
		}
		if got := other.commits(); len(got) != 1 {
			t.Errorf("%d commits after a refused commit, want 1", len(got))
		}
		if rep := other.fsckClean(); rep.Images != 1 {
			t.Errorf("fsck sees %d images, want 1: a refused commit may not index its image", rep.Images)
		}
	})
}

// checkGNUTarXattrs checks that GNU tar records xattrs as PAX
// SCHILY.xattr records, the form the tar import reads.
func checkGNUTarXattrs(t *testing.T, src string) {
	t.Helper()
	out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "-cf", "-", "-C", src, "./xattrs").Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	found := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				found[strings.TrimPrefix(h.Name, "./")+" "+strings.TrimPrefix(k, "SCHILY.xattr.")] = v
			}
		}
	}
	for _, want := range []string{"xattrs/file user.plain", "xattrs/file trusted.bin", "xattrs/file security.test", "xattrs/file user.name%3Dwith equals", "xattrs/ user.on-dir"} {
		if _, ok := found[want]; !ok {
			t.Errorf("GNU tar did not record %s as a SCHILY.xattr PAX record (found %v)", want, keys(found))
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestRoundTripGoTar commits a tar stream written with archive/tar (PAX
// xattrs, hard links, names and link targets over 100 bytes, devices,
// large owners) and compares the mount with GNU tar's extraction of the
// same stream, and with what the stream says.
func TestRoundTripGoTar(t *testing.T) {
	needMount(t)
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar")
	}
	longDir := strings.Repeat("long-directory-name-", 6)    // 120 bytes
	longName := longDir + "/" + strings.Repeat("file-", 30) // > 250 bytes path
	mt := func(sec int64, nsec int64) time.Time { return time.Unix(sec, nsec) }
	content := bytes.Repeat([]byte("tar content "), 500)
	type ent struct {
		h    tar.Header
		body []byte
	}
	ents := []ent{
		{h: tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, ModTime: mt(1600000000, 1)}},
		// GNU tar sets a directory's time when the archive moves on to
		// another directory, so entries are grouped by directory here.
		{h: tar.Header{Typeflag: tar.TypeReg, Name: "small", Mode: 0o600, Size: 5, Uid: 3000000000, Gid: 100000, ModTime: mt(1600000003, 999999999)}, body: []byte("small")},
		{h: tar.Header{Typeflag: tar.TypeDir, Name: longDir + "/", Mode: 0o750, Uid: 70000, Gid: 70001, ModTime: mt(1600000001, 2)}},
		{h: tar.Header{Typeflag: tar.TypeReg, Name: longName, Mode: 0o644, Size: int64(len(content)), ModTime: mt(1600000002, 3),
			PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.t": "\x00\xff", "SCHILY.xattr.security.s": "sec"}},
			body: content},
		{h: tar.Header{Typeflag: tar.TypeLink, Name: longDir + "/small-link", Linkname: "small"}},
		{h: tar.Header{Typeflag: tar.TypeLink, Name: "hardlink-to-long", Linkname: longName, ModTime: mt(1600000002, 3)}},
		{h: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs-symlink", Linkname: "/" + strings.Repeat("t", 150), ModTime: mt(1600000004, 4)}},
		{h: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt(1600000005, 5)}},
		{h: tar.Header{Typeflag: tar.TypeBlock, Name: "blk", Mode: 0o660, Devmajor: 259, Devminor: 70000, ModTime: mt(1600000006, 6)}},
		{h: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644, ModTime: mt(1600000007, 7)}},
		{h: tar.Header{Typeflag: tar.TypeReg, Name: "empty", Mode: 0o4755, ModTime: mt(1600000008, 8)}},
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, en := range ents {
		h := en.h
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		tw.Write(en.body)
	}
	tw.Close()
	stream := filepath.Join(t.TempDir(), "go.tar")
	os.WriteFile(stream, b.Bytes(), 0o644)

	e := newEnv(t)
	e.commit("gotar", "", "--from-tar", stream)
	mnt := e.mount("gotar")

	// GNU tar's extraction as root is the reference.
	ref := filepath.Join(t.TempDir(), "ref")
	os.Mkdir(ref, 0o755)
	if out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", stream, "-C", ref).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	treecmp.Compare(t, ref, mnt, treecmp.Options{})

	// And a few facts straight from the stream.
	var st1, st2 os.FileInfo
	st1, _ = os.Lstat(filepath.Join(mnt, longName))
	st2, _ = os.Lstat(filepath.Join(mnt, "hardlink-to-long"))
	if st1 == nil || st2 == nil || !os.SameFile(st1, st2) {
		t.Error("hard link to the long name is not the same inode in the mount")
	}
	if l, _ := os.Readlink(filepath.Join(mnt, "abs-symlink")); l != "/"+strings.Repeat("t", 150) {
		t.Errorf("absolute symlink reads %q", l)
	}
	x, err := treecmp.Xattrs(filepath.Join(mnt, longName))
	if err != nil || x["user.k"] != "v" || x["trusted.t"] != "\x00\xff" || x["security.s"] != "sec" {
		t.Errorf("xattrs %q (%v)", x, err)
	}
	var ls []lsEntry
	json.Unmarshal([]byte(e.ok("ls", "--json", "gotar", "/")), &ls)
	for _, en := range ls {
		if en.Path == "/small" && (en.UID != 3000000000 || en.GID != 100000) {
			t.Errorf("/small owner %d:%d", en.UID, en.GID)
		}
		if en.Path == "/blk" && en.Type != "blockdev" {
			t.Errorf("/blk type %s", en.Type)
		}
	}
	e.fsckClean()
}
