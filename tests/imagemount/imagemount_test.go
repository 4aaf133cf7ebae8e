// Package imagemount checks composefs images against the kernel: it builds
// a source tree with every kind of entry, turns it into an image with the
// cfs-deploy command line, mounts the image the way mount.composefs does
// (EROFS, then a read-only overlayfs with the object store as a data-only
// lower layer) and compares the mount with the source entry by entry.
//
// It needs root and a kernel with EROFS and overlayfs data-only lower
// layers (Linux 6.5+); it does not need fs-verity.
package imagemount

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/fulltree"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/mounttest"
	"github.com/cfs-deploy/cfs-deploy/tests/treecmp"
	"golang.org/x/sys/unix"
)

func TestImageMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, mknod, chown, trusted.* xattrs)")
	}
	mounttest.SkipUnlessKernelHas(t, "erofs", "overlay")
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		t.Logf("kernel %s; SELinux labels ignored: %v", unix.ByteSliceToString(uts.Release[:]), treecmp.SELinuxEnabled)
	}
	start := time.Now()
	work := t.TempDir()
	bin := gobuild.T(t, "./cmd/cfs-deploy")
	t.Logf("built cfs-deploy in %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	srcDir := filepath.Join(work, "src")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := fulltree.Build(t, srcDir, fulltree.Options{})
	t.Logf("built the source tree in %v", time.Since(start).Round(time.Millisecond))

	variants := []bool{false}
	if toolHasFlag(t, bin, "--hardlinks") {
		variants = append(variants, true)
	} else {
		t.Log("cfs-deploy mkcomposefs has no --hardlinks: checking upstream's behaviour only")
	}
	for _, hardlinks := range variants {
		name := "default"
		if hardlinks {
			name = "hardlinks"
		}
		t.Run(name, func(t *testing.T) {
			checkImage(t, bin, src, hardlinks)
		})
	}
}

func toolHasFlag(t *testing.T, bin, flag string) bool {
	out, _ := exec.Command(bin, "mkcomposefs", "--help").CombinedOutput()
	return bytes.Contains(out, []byte(flag+" ")) || bytes.Contains(out, []byte(flag+"\n")) || bytes.Contains(out, []byte(flag+"="))
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func checkImage(t *testing.T, bin string, src *fulltree.Tree, hardlinks bool) {
	dir := t.TempDir()
	objects := filepath.Join(dir, "objects")
	image := filepath.Join(dir, "image.cfs")
	meta := filepath.Join(dir, "meta")
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{meta, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	args := []string{"mkcomposefs", "--digest-store=" + objects}
	if hardlinks {
		args = append(args, "--hardlinks")
	}
	args = append(args, src.Dir, image)
	run(t, bin, args...)
	t.Logf("cfs-deploy %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))

	checkObjects(t, objects, src.Objects)
	checkHeader(t, image, src)

	mountErofs(t, image, meta)
	mountOverlay(t, meta, objects, mnt)

	start = time.Now()
	checkStubs(t, src, meta, mnt)
	checkRaw(t, src, meta, objects)
	n := treecmp.Compare(t, src.Dir, mnt, treecmp.Options{
		HardLinksDropped: !hardlinks,
		Whiteouts:        src.Whiteouts,
		EscapedXattrs:    src.Escaped,
	})
	t.Logf("compared %d entries in %v", n, time.Since(start).Round(time.Millisecond))
}

var objectName = regexp.MustCompile(`^[0-9a-f]{2}/[0-9a-f]{62}$`)

// checkObjects checks that the store holds one object per distinct large
// content, under xx/<62 hex>, and nothing else but fan-out directories.
func checkObjects(t *testing.T, objects string, want int) {
	t.Helper()
	count := 0
	err := filepath.WalkDir(objects, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(objects, p)
		switch {
		case d.IsDir():
			if rel != "." && (len(rel) != 2 || strings.Trim(rel, "0123456789abcdef") != "") {
				t.Errorf("object store: unexpected directory %s", rel)
			}
		case objectName.MatchString(rel) && d.Type().IsRegular():
			count++
		default:
			t.Errorf("object store: unexpected entry %s (%v)", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != want {
		t.Errorf("object store holds %d objects, want %d (one per distinct content over %d bytes)", count, want, fulltree.InlineMax)
	}
}

// checkHeader checks the composefs header: the whiteout in the source
// makes the image version 1, and the ACL sets the ACL flag (so that
// mount.composefs does not mount the EROFS with noacl).
func checkHeader(t *testing.T, image string, src *fulltree.Tree) {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [32]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if m := le.Uint32(h[0:]); m != 0xd078629a {
		t.Fatalf("composefs magic %#x", m)
	}
	wantVersion := uint32(0)
	if len(src.Whiteouts) > 0 {
		wantVersion = 1
	}
	if v := le.Uint32(h[12:]); v != wantVersion {
		t.Errorf("composefs_version %d, want %d", v, wantVersion)
	}
	if flags := le.Uint32(h[8:]); (flags&1 != 0) != src.HasACL {
		t.Errorf("header flags %#x, ACL flag should be %v", flags, src.HasACL)
	}
}

// checkStubs checks the 256 whiteouts "00".."ff" every image's root has:
// visible in the EROFS mount as 0/0 character devices (except where the
// source has an entry of that name), hidden by the overlay.
func checkStubs(t *testing.T, src *fulltree.Tree, meta, mnt string) {
	t.Helper()
	srcNames, err := treecmp.ReadNames(src.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var root unix.Stat_t
	if err := unix.Lstat(src.Dir, &root); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(srcNames)
	stubs := 0
	for i := range 256 {
		name := fmt.Sprintf("%02x", i)
		if slices.Contains(srcNames, name) {
			continue
		}
		stubs++
		want = append(want, name)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(meta, name), &st); err != nil {
			t.Errorf("EROFS mount: whiteout stub %s: %v", name, err)
			continue
		}
		if st.Mode != unix.S_IFCHR|0o644 || st.Rdev != 0 || st.Uid != root.Uid || st.Gid != root.Gid || st.Mtim != root.Mtim {
			t.Errorf("EROFS mount: stub %s has mode %#o rdev %d owner %d:%d mtime %v, want 020644, 0, the root's %d:%d %v",
				name, st.Mode, st.Rdev, st.Uid, st.Gid, st.Mtim, root.Uid, root.Gid, root.Mtim)
		}
		if err := unix.Lstat(filepath.Join(mnt, name), &st); err == nil {
			t.Errorf("overlay mount: whiteout stub %s is visible (mode %#o)", name, st.Mode)
		} else if err != unix.ENOENT {
			t.Errorf("overlay mount: lstat %s: %v, want ENOENT", name, err)
		}
	}
	slices.Sort(want)
	got, err := treecmp.ReadNames(meta)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("EROFS mount root: only there %v, missing %v", treecmp.QuoteAll(treecmp.OnlyIn(got, want)), treecmp.QuoteAll(treecmp.OnlyIn(want, got)))
	}
	got, err = treecmp.ReadNames(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, srcNames) {
		t.Errorf("overlay root: only there %v, missing %v", treecmp.QuoteAll(treecmp.OnlyIn(got, srcNames)), treecmp.QuoteAll(treecmp.OnlyIn(srcNames, got)))
	}
	if stubs != 255 {
		t.Errorf("%d stubs, want 255 (the source root has an entry 0a)", stubs)
	}
}

// checkRaw looks at the EROFS mount without the overlay: small files hold
// their content, larger ones are empty metacopy files whose redirect names
// an object with the file's content, and whiteouts are escaped.
func checkRaw(t *testing.T, src *fulltree.Tree, meta, objects string) {
	t.Helper()
	checked := 0
	err := filepath.WalkDir(src.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src.Dir, p)
		raw := filepath.Join(meta, rel)
		if slices.Contains(src.Whiteouts, rel) {
			x, err := treecmp.Xattrs(raw)
			if err != nil {
				t.Errorf("EROFS mount: %v", err)
				return nil
			}
			var st unix.Stat_t
			if err := unix.Lstat(raw, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("EROFS mount: %s: escaped whiteout should be a regular file (mode %#o, %v)", rel, st.Mode, err)
			}
			if _, ok := x["trusted.overlay.overlay.whiteout"]; !ok {
				t.Errorf("EROFS mount: %s: no trusted.overlay.overlay.whiteout (xattrs:%s)", rel, treecmp.FormatXattrs(x))
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		content, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		x, err := treecmp.Xattrs(raw)
		if err != nil {
			t.Errorf("EROFS mount: %v", err)
			return nil
		}
		redirect, hasRedirect := x["trusted.overlay.redirect"]
		metacopy, hasMetacopy := x["trusted.overlay.metacopy"]
		var st unix.Stat_t
		if err := unix.Lstat(raw, &st); err != nil {
			t.Errorf("EROFS mount: %v", err)
			return nil
		}
		if st.Size != int64(len(content)) {
			t.Errorf("EROFS mount: %s: size %d, want %d", treecmp.Quote(rel), st.Size, len(content))
		}
		checked++
		if len(content) <= fulltree.InlineMax {
			if hasRedirect || hasMetacopy {
				t.Errorf("EROFS mount: %s: a %d-byte file should be inline, has redirect %q metacopy %v", treecmp.Quote(rel), len(content), redirect, hasMetacopy)
			}
			if got, err := os.ReadFile(raw); err != nil || !bytes.Equal(got, content) {
				t.Errorf("EROFS mount: %s: inline content differs (%v)", treecmp.Quote(rel), err)
			}
			return nil
		}
		if !hasRedirect || !hasMetacopy {
			t.Errorf("EROFS mount: %s: external file without redirect or metacopy (xattrs:%s)", treecmp.Quote(rel), treecmp.FormatXattrs(x))
			return nil
		}
		obj := strings.TrimPrefix(redirect, "/")
		if !objectName.MatchString(obj) || !strings.HasPrefix(redirect, "/") {
			t.Errorf("EROFS mount: %s: redirect %q is not /xx/<62 hex>", treecmp.Quote(rel), redirect)
			return nil
		}
		// The metacopy xattr holds the fs-verity digest the path is named
		// after: version 0, length 36, flags 0, SHA-256.
		if len(metacopy) != 36 || metacopy[:4] != "\x00\x24\x00\x01" ||
			hex.EncodeToString([]byte(metacopy[4:])) != strings.ReplaceAll(obj, "/", "") {
			t.Errorf("EROFS mount: %s: metacopy %x does not match redirect %s", treecmp.Quote(rel), metacopy, redirect)
		}
		got, err := os.ReadFile(filepath.Join(objects, obj))
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("object %s for %s: content differs from the source (%v)", obj, treecmp.Quote(rel), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checked %d regular files in the EROFS mount", checked)
}

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}
