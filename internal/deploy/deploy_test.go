package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/etcmerge"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"golang.org/x/sys/unix"
)

func TestRollout(t *testing.T) {
	f := newFixture(t)
	a := f.commit("os", "1.0")
	res, err := f.rollout("os", "quiet", "console=ttyS0")
	if err != nil {
		t.Fatal(err)
	}
	img := a.Image.String()

	// The deployment's /etc is the image's /etc.
	if res.StateDir != filepath.Join(f.sysroot, "state/deploy", img) || !res.StateCreated {
		t.Fatalf("state dir %s created=%v", res.StateDir, res.StateCreated)
	}
	_, root, err := f.r.CommitTree(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	compareTree(t, f.r, mustResolve(t, root, "/etc"), filepath.Join(res.StateDir, "etc"))
	if fi, _ := os.Lstat(filepath.Join(res.StateDir, "etc/ssh/key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("etc/ssh/key mode %v", fi.Mode())
	}
	var st, st2 unix.Stat_t
	unix.Lstat(filepath.Join(res.StateDir, "etc/big.conf"), &st)
	unix.Lstat(filepath.Join(res.StateDir, "etc/big-link.conf"), &st2)
	if st.Ino != st2.Ino {
		t.Errorf("etc/big-link.conf is not a hard link of etc/big.conf")
	}

	o, err := ReadOrigin(res.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if o.Commit != a.ID || o.Branch != "os" || o.Stateroot != "default" || o.Image.String() != img ||
		o.Kernel != f.kver || o.Created.IsZero() || o.Version != "1.0" || !o.MergedFrom.IsZero() {
		t.Errorf("origin %+v", o)
	}
	if got := readFile(t, filepath.Join(res.StateDir, "stateroot")); got != "default\n" {
		t.Errorf("stateroot file %q", got)
	}

	// /var is seeded from the image.
	if got := readFile(t, filepath.Join(res.VarDir, "lib/x/file")); got != "var seed\n" || !res.VarCreated {
		t.Errorf("var: %q created=%v", got, res.VarCreated)
	}

	// Boot files are named by their content.
	kd := a.Commit.Kernel.Vmlinuz
	if res.Kernel != filepath.Join(f.boot, "cfs-deploy", "vmlinuz-"+f.kver+"-"+kd.String()[:16]) {
		t.Errorf("kernel %s", res.Kernel)
	}
	if !bytes.Equal(readBytes(t, res.Kernel), readBytes(t, filepath.Join(f.src, "usr/lib/modules", f.kver, "vmlinuz"))) {
		t.Errorf("kernel content differs from the tree's vmlinuz")
	}
	if !strings.HasPrefix(res.Initramfs, filepath.Join(f.boot, "cfs-deploy", "initramfs-"+f.kver+"-")) || !res.InitramfsBuilt || res.InitramfsReused {
		t.Errorf("initramfs %s built=%v reused=%v", res.Initramfs, res.InitramfsBuilt, res.InitramfsReused)
	}
	if len(res.NewBootFiles) != 2 {
		t.Errorf("new boot files %v", res.NewBootFiles)
	}

	// The entry boots it, with the insecure composefs= mark and the kargs.
	e := onlyEntry(t, f.boot, EntryID(a.Image))
	if e.Linux != "/cfs-deploy/"+filepath.Base(res.Kernel) || !slices.Equal(e.Initrd, []string{"/cfs-deploy/" + filepath.Base(res.Initramfs)}) {
		t.Errorf("entry paths %s %v", e.Linux, e.Initrd)
	}
	wantOpts := "root=UUID=0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6 rw composefs=?" + img + " quiet console=ttyS0"
	if got := e.Cmdline().String(); got != wantOpts || res.Cmdline != wantOpts {
		t.Errorf("options %q, want %q", got, wantOpts)
	}
	if e.Title != `Fixture OS "test" 1.0 (`+a.ID.String()[:12]+")" || e.Version != "1" || e.SortKey != SortKey {
		t.Errorf("title %q version %q sort-key %q", e.Title, e.Version, e.SortKey)
	}
	refs, err := bootcfg.ComposefsRefs(e.Cmdline())
	if err != nil || len(refs) != 1 || refs[0].Digest != a.Image || !refs[0].Insecure {
		t.Errorf("composefs refs %+v, %v", refs, err)
	}
	checkDefault(t, f.boot, EntryID(a.Image))
	checkNoTemps(t, f)

	// The initramfs built from the repository (TreeFS) is the one built
	// from a checkout of the same modules, with the default set for the
	// sysroot's file system and disk.
	dir := t.TempDir()
	if err := checkout(f.r, mustResolve(t, root, "/usr"), filepath.Join(dir, "usr")); err != nil {
		t.Fatal(err)
	}
	lean, _, _ := leanRoot(f.sysroot, "UUID=0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6")
	var fromDir bytes.Buffer
	if _, err := initramfs.Build(&fromDir, initramfs.Options{Init: f.init, KernelVersion: f.kver, ModulesTree: dir, Default: initramfs.LeanModules(lean)}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromDir.Bytes(), readBytes(t, res.Initramfs)) {
		t.Errorf("initramfs from the checkout (%d bytes) differs from the one built from the repository", fromDir.Len())
	}
}

func TestRolloutKeepsStateAndSharesBootFiles(t *testing.T) {
	f := newFixture(t)
	a := f.commit("os", "1.0")
	ra, err := f.rollout("os")
	if err != nil {
		t.Fatal(err)
	}
	// The admin edits the running system.
	edited := filepath.Join(ra.StateDir, "etc/hostname")
	if err := os.WriteFile(edited, []byte("edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ra.VarDir, "lib/x/file"), []byte("runtime data\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A new version changes /etc and /var defaults, not the kernel.
	f.write("etc/hostname", "second\n", 0o644)
	f.write("var/lib/x/new", "only in b\n", 0o644)
	b := f.commit("os", "2.0")
	rb, err := f.rollout(b.ID.String()[:10])
	if err != nil {
		t.Fatal(err)
	}
	if rb.VarCreated || rb.VarDir != ra.VarDir {
		t.Errorf("second rollout recreated /var")
	}
	if got := readFile(t, filepath.Join(rb.VarDir, "lib/x/file")); got != "runtime data\n" {
		t.Errorf("/var was reset: %q", got)
	}
	if _, err := os.Stat(filepath.Join(rb.VarDir, "lib/x/new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/var was re-seeded: %v", err)
	}
	// The admin's edit is carried into the new deployment's /etc.
	if got := readFile(t, filepath.Join(rb.StateDir, "etc/hostname")); got != "edited\n" {
		t.Errorf("new deployment's /etc/hostname %q, want the local edit", got)
	}
	if rb.MergedFrom != a.Image || rb.Merge == nil || rb.Merge.Count(etcmerge.Modified) != 1 {
		t.Errorf("merge: from %q, %+v", rb.MergedFrom, rb.Merge)
	}
	if got := readFile(t, edited); got != "edited\n" {
		t.Errorf("first deployment's edited /etc/hostname became %q", got)
	}
	if o, err := ReadOrigin(rb.StateDir); err != nil || o.Branch != "" || o.Commit != b.ID {
		t.Errorf("origin of a rollout by commit id: %+v %v", o, err)
	}
	// Same kernel, same modules, same cfs-init: the same two files.
	if rb.Kernel != ra.Kernel || rb.Initramfs != ra.Initramfs || len(rb.NewBootFiles) != 0 || !rb.InitramfsReused {
		t.Errorf("boot files not shared: %s %s new %v reused %v", rb.Kernel, rb.Initramfs, rb.NewBootFiles, rb.InitramfsReused)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.boot, "cfs-deploy")); len(ents) != 2 {
		t.Errorf("%d files in boot/cfs-deploy, want 2", len(ents))
	}
	checkDefault(t, f.boot, EntryID(b.Image))
	entries, err := bootcfg.ReadEntries(EntriesDir(f.boot))
	if err != nil || len(entries) != 2 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}

	// Rolling back out the first commit keeps its edited /etc and makes
	// it the default again.
	ra2, err := f.rollout(a.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if ra2.StateCreated || readFile(t, edited) != "edited\n" {
		t.Errorf("second rollout of a deployment replaced its /etc")
	}
	checkDefault(t, f.boot, EntryID(a.Image))
	checkNoTemps(t, f)
}

// A failure before the entry leaves nothing the rollout made: a file
// where loader/entries should be makes the entry step fail after the
// state and boot files exist.
func TestRolloutFailureBeforeEntry(t *testing.T) {
	f := newFixture(t)
	a := f.commit("os", "1.0")
	if err := os.MkdirAll(filepath.Join(f.boot, "loader"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(EntriesDir(f.boot), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := f.rollout("os")
	if err == nil || !strings.Contains(err.Error(), EntriesDir(f.boot)) {
		t.Fatalf("rollout: %v (%+v), want an error naming %s", err, res, EntriesDir(f.boot))
	}
	if _, err := os.Stat(StateDir(f.sysroot, a.Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left behind: %v", err)
	}
	if _, err := os.Stat(VarDir(f.sysroot, "default")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("var left behind: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.boot, "cfs-deploy")); len(ents) != 0 {
		t.Errorf("boot files left behind: %v", ents)
	}
	if _, err := os.Stat(LoaderConfPath(f.boot)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loader.conf written: %v", err)
	}
	checkNoTemps(t, f)

	// With the obstacle gone the same rollout works, and it clears what
	// an interrupted rollout (a crash) would have left.
	os.Remove(EntriesDir(f.boot))
	for _, p := range []string{
		filepath.Join(f.sysroot, "state/deploy/.tmp-0123456789ab-42/etc/x"),
		filepath.Join(f.sysroot, "state/os/default/.tmp-var-42/var/x"),
		filepath.Join(f.boot, "cfs-deploy/.vmlinuz-1-2.tmp-42"),
		filepath.Join(EntriesDir(f.boot), ".cfs-deploy-0123456789ab.conf.tmp-42"),
		filepath.Join(f.boot, "loader/.loader.conf.tmp-42"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(EntriesDir(f.boot), ".other-tool.conf.tmp-1")
	os.WriteFile(other, nil, 0o644)
	if _, err := f.rollout("os"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another tool's temporary file was removed: %v", err)
	}
	os.Remove(other)
	checkNoTemps(t, f)
}

// A failure after the new entry is written takes it back and restores the
// previous default; the previous deployment and its boot files stay.
func TestRolloutFailureAfterEntry(t *testing.T) {
	f := newFixture(t)
	a := f.commit("os", "1.0")
	// An older cfs-deploy named its entry as loader.conf's default;
	// rollout drops that line, keeps the others, and on failure puts the
	// file back as it was.
	f.must(os.MkdirAll(filepath.Dir(LoaderConfPath(f.boot)), 0o755))
	f.must(os.WriteFile(LoaderConfPath(f.boot), []byte("timeout 5\ndefault cfs-deploy-000000000000.conf\n"), 0o644))
	ra, err := f.rollout("os", "quiet")
	if err != nil {
		t.Fatal(err)
	}
	loaderBefore := readFile(t, LoaderConfPath(f.boot))
	if loaderBefore != "timeout 5\n" {
		t.Errorf("loader.conf after rollout: %q, want the default line dropped", loaderBefore)
	}
	f.must(os.WriteFile(LoaderConfPath(f.boot), []byte("timeout 5\ndefault cfs-deploy-000000000000.conf\n"), 0o644))
	loaderBefore = readFile(t, LoaderConfPath(f.boot))
	entryBefore := readFile(t, ra.Entry)

	// A new kernel, so that the failed rollout has a boot file of its own.
	vmlinuz := filepath.Join(f.src, "usr/lib/modules", f.kver, "vmlinuz")
	k, err := os.OpenFile(vmlinuz, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	k.Write([]byte("changed"))
	k.Close()
	b := f.commit("os", "2.0")

	for _, step := range []string{"entry", "loader"} {
		failpoint = func(s string) error {
			if s == step {
				return errors.New("injected failure")
			}
			return nil
		}
		_, err = f.rollout("os")
		failpoint = nil
		if err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("failure at %s: %v", step, err)
		}
		if _, err := os.Stat(filepath.Join(EntriesDir(f.boot), EntryID(b.Image)+".conf")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failure at %s: new entry left: %v", step, err)
		}
		if readFile(t, ra.Entry) != entryBefore || readFile(t, LoaderConfPath(f.boot)) != loaderBefore {
			t.Errorf("failure at %s: old entry or loader.conf changed", step)
		}
		if _, err := os.Stat(StateDir(f.sysroot, b.Image)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failure at %s: new state dir left: %v", step, err)
		}
		ents, _ := os.ReadDir(filepath.Join(f.boot, "cfs-deploy"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		want := []string{filepath.Base(ra.Initramfs), filepath.Base(ra.Kernel)}
		if !slices.Equal(names, want) {
			t.Errorf("failure at %s: boot files %v, want %v", step, names, want)
		}
		if _, err := os.Stat(StateDir(f.sysroot, a.Image)); err != nil {
			t.Errorf("failure at %s: old deployment damaged: %v", step, err)
		}
		checkNoTemps(t, f)
	}

	// Rolling out the same image again with other kernel arguments and
	// failing puts the old entry back as it was.
	failpoint = func(s string) error {
		if s == "loader" {
			return errors.New("injected failure")
		}
		return nil
	}
	_, err = f.rollout(a.ID.String(), "splash")
	failpoint = nil
	if err == nil {
		t.Fatal("no failure")
	}
	if readFile(t, ra.Entry) != entryBefore {
		t.Errorf("the rewritten entry was not restored:\n%s", readFile(t, ra.Entry))
	}
}

func TestRolloutRefusals(t *testing.T) {
	f := newFixture(t)
	f.commit("os", "1.0")
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Ref: "nosuch"}, "no such commit"},
		{Options{Ref: "os", Kargs: []string{"composefs=abc"}}, "rollout writes it"},
		{Options{Ref: "os", Kargs: []string{"root=/dev/sda"}}, "--root"},
		{Options{Ref: "os", Stateroot: "../x"}, "bad stateroot"},
		{Options{Ref: "os", Sysroot: t.TempDir()}, "not a cfs-deploy sysroot"},
		{Options{Ref: "os", Kargs: []string{"rootwait=forever"}}, "cfs-init would refuse"},
		{Options{Ref: "os", Kargs: []string{"cfs.reboot-delay=99999"}}, "cfs-init would refuse"},
		{Options{Ref: "os", Kargs: []string{"init=sbin/init"}}, "cfs-init would refuse"},
		{Options{Ref: "os", Kargs: []string{"cfs.debug=maybe"}}, "cfs-init would refuse"},
		{Options{Ref: "os", Kargs: []string{"rootdelay=-1"}}, "cfs-init would refuse"},
		{Options{Ref: "os", Root: "UUID="}, "root="},
		{Options{Ref: "os", AllowInsecure: false}, "no fs-verity"},
	} {
		c.opts.Repo = f.r
		if c.opts.Root == "" {
			c.opts.Root = "/dev/vda"
		}
		c.opts.Init = f.init
		c.opts.BootDir = f.boot
		c.opts.AllowInsecure = c.want != "no fs-verity"
		if _, err := Rollout(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.opts, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(f.sysroot, "state/deploy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused rollout created state: %v", err)
	}

	// A commit without a kernel cannot be booted.
	os.RemoveAll(filepath.Join(f.src, "usr/lib/modules"))
	f.commit("nokernel", "")
	if _, err := f.rollout("nokernel"); err == nil || !strings.Contains(err.Error(), "no kernel") {
		t.Errorf("commit without a kernel: %v", err)
	}
}

// compareTree checks that the checkout at dir matches the tree n: types,
// modes, owners, mtimes, contents, link targets and xattrs.
func compareTree(t *testing.T, r *repo.Repo, n *erofs.Node, dir string) {
	t.Helper()
	count := 0
	erofs.Walk(n, func(m *erofs.Node) error {
		rel := strings.TrimPrefix(strings.TrimPrefix(m.Path(), n.Path()), "/")
		p := filepath.Join(dir, rel)
		tn := m.Target()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		count++
		if st.Mode != tn.Mode || st.Uid != tn.UID || st.Gid != tn.GID {
			t.Errorf("%s: mode %o %d:%d, want %o %d:%d", rel, st.Mode, st.Uid, st.Gid, tn.Mode, tn.UID, tn.GID)
		}
		if !tn.IsDir() && (st.Mtim.Sec != tn.Mtime.Sec || st.Mtim.Nsec != int64(tn.Mtime.Nsec)) {
			t.Errorf("%s: mtime %v, want %v", rel, st.Mtim, tn.Mtime)
		}
		if tn.IsDir() && st.Mtim.Sec != tn.Mtime.Sec {
			t.Errorf("%s: directory mtime %v, want %v", rel, st.Mtim, tn.Mtime)
		}
		switch {
		case tn.IsRegular():
			f, inline, err := r.ReadFile(tn)
			if err != nil {
				t.Fatal(err)
			}
			want := inline
			if f != nil {
				want = readBytes(t, f.Name())
				f.Close()
			}
			if got := readBytes(t, p); !bytes.Equal(got, want) {
				t.Errorf("%s: content differs", rel)
			}
		case tn.Type() == erofs.ModeChr || tn.Type() == erofs.ModeBlk:
			if st.Rdev != tn.Rdev {
				t.Errorf("%s: device %#x, want %#x", rel, st.Rdev, tn.Rdev)
			}
		case tn.IsSymlink():
			if got, _ := os.Readlink(p); got != tn.Payload {
				t.Errorf("%s: link to %q, want %q", rel, got, tn.Payload)
			}
		}
		for _, x := range tn.Xattrs {
			buf := make([]byte, 4096)
			sz, err := unix.Lgetxattr(p, x.Key, buf)
			if err != nil || string(buf[:sz]) != x.Value {
				t.Errorf("%s: xattr %s = %q, %v; want %q", rel, x.Key, buf[:max(sz, 0)], err, x.Value)
			}
		}
		return nil
	})
	if count < 5 {
		t.Errorf("only %d entries compared", count)
	}
	if v, ok := mustResolve(t, n, "hostname").GetXattr("user.origin"); !ok || v != "image" {
		t.Errorf("the image lost etc/hostname's xattr, the test proves nothing")
	}
}

func mustResolve(t *testing.T, root *erofs.Node, p string) *erofs.Node {
	t.Helper()
	n, err := erofs.Resolve(root, p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func onlyEntry(t *testing.T, boot, id string) *bootcfg.Entry {
	t.Helper()
	entries, err := bootcfg.ReadEntries(EntriesDir(boot))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != id {
		t.Fatalf("entries %v, want only %s", entries, id)
	}
	return entries[0]
}

// checkDefault checks that id is the entry the boot loader boots: the
// first of the entries in systemd-boot's order, with no loader.conf
// default line to override the order.
func checkDefault(t *testing.T, boot, id string) {
	t.Helper()
	entries, err := bootcfg.ReadEntries(EntriesDir(boot))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].ID != id {
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.ID+"@"+e.Version)
		}
		t.Errorf("boot order %v, want %s first", ids, id)
	}
	lc, err := bootcfg.ReadLoaderConf(LoaderConfPath(boot))
	if err != nil {
		t.Fatal(err)
	}
	if lc.Default != "" {
		t.Errorf("loader.conf default %q: the order must come from the entries", lc.Default)
	}
}

// checkNoTemps fails if a temporary file or directory is left anywhere in
// the sysroot's state or the boot directory.
func checkNoTemps(t *testing.T, f *fixture) {
	t.Helper()
	for _, top := range []string{filepath.Join(f.sysroot, "state"), f.boot} {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.Contains(d.Name(), ".tmp-") {
				t.Errorf("temporary file left: %s", p)
			}
			if err == nil && d.IsDir() && p != top && strings.HasPrefix(p, filepath.Join(f.sysroot, "state", "deploy")) && filepath.Dir(p) == filepath.Join(f.sysroot, "state", "deploy") {
				return filepath.SkipDir // a deployment's own /etc may hold anything
			}
			return nil
		})
	}
}

func readBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t *testing.T, p string) string { return string(readBytes(t, p)) }

// A commit that ships its own initramfs.img boots with it; no cfs-init is
// needed then.
func TestRolloutUsesCommitInitramfs(t *testing.T) {
	f := newFixture(t)
	f.write(filepath.Join("usr/lib/modules", f.kver, "initramfs.img"), strings.Repeat("dracut image ", 1000), 0o644)
	c := f.commit("os", "")
	res, err := Rollout(Options{Repo: f.r, BootDir: f.boot, Ref: "os", Root: "LABEL=root", AllowInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Commit.Kernel.Initramfs
	if res.InitramfsBuilt || res.Initramfs != filepath.Join(f.boot, "cfs-deploy", "initramfs-"+f.kver+"-"+d.String()[:16]+".img") {
		t.Errorf("initramfs %s built=%v", res.Initramfs, res.InitramfsBuilt)
	}
	if readFile(t, res.Initramfs) != strings.Repeat("dracut image ", 1000) {
		t.Errorf("initramfs content is not the commit's")
	}
	e := onlyEntry(t, f.boot, EntryID(c.Image))
	if e.Version != "1" || !strings.HasPrefix(e.Title, `Fixture OS "test" (`) {
		t.Errorf("entry without a commit version: version %q title %q", e.Version, e.Title)
	}
}

// TestRolloutRefusesUnbootable: a repository not named composefs (cfs-init
// would not find it) or a commit whose objects are missing must not become
// the boot default.
func TestRolloutRefusesUnbootable(t *testing.T) {
	f := newFixture(t)
	res := f.commit("os", "1.0")
	_, root, err := f.r.CommitTree(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	erofs.Walk(root, func(n *erofs.Node) error {
		if victim == "" && n.IsExternal() {
			victim = f.r.ObjectPath(n.Digest)
		}
		return nil
	})
	if err := os.Remove(victim); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rollout("os"); err == nil || !strings.Contains(err.Error(), "missing from the repository") {
		t.Fatalf("rollout with a missing object: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.boot, "loader", "entries")); len(ents) != 0 {
		t.Fatalf("refused rollout left entries: %v", ents)
	}
}

// TestRolloutKeepsStateroot: a deployment's stateroot is fixed when it is
// created; asking for another one later is refused, not silently ignored.
func TestRolloutKeepsStateroot(t *testing.T) {
	f := newFixture(t)
	f.commit("os", "1.0")
	if _, err := f.rollout("os"); err != nil {
		t.Fatal(err)
	}
	_, err := Rollout(Options{Repo: f.r, Sysroot: f.sysroot, BootDir: f.boot, Ref: "os",
		Root: "/dev/vda", Init: f.init, AllowInsecure: true, Stateroot: "other"})
	if err == nil || !strings.Contains(err.Error(), `stateroot "default"`) {
		t.Fatalf("second rollout with another stateroot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.sysroot, "state", "os", "other")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused rollout created the other stateroot: %v", err)
	}
}

// TestRolloutDracut: rollout --initramfs dracut-generic builds the
// deployment's initramfs with the host's dracut and the cfs-deploy dracut
// module (booted in tests/vm); the image carries cfs-init.
func TestRolloutDracut(t *testing.T) {
	if _, err := exec.LookPath("dracut"); err != nil {
		if os.Getenv("CFS_DEPLOY_VM_REQUIRED") != "" {
			t.Fatal("dracut not installed (scripts/install-deps installs dracut-core)")
		}
		t.Skip("dracut not installed")
	}
	f := newFixture(t)
	f.commit("os", "1.0")
	// The smallest set that makes a systemd initramfs; the full default
	// set takes several times as long to build (and boots in tests/vm).
	dracutModules = []string{"base", "systemd", "systemd-initrd", "dracut-systemd", "rootfs-block", "udev-rules", "fs-lib"}
	defer func() { dracutModules = nil }()
	wd, err := os.Getwd()
	f.must(err)
	init := filepath.Join(t.TempDir(), "cfs-init")
	f.must(os.WriteFile(init, []byte("\x7fELF not really cfs-init, but a file dracut can install\n"), 0o755))
	res, err := Rollout(Options{
		Repo: f.r, Sysroot: f.sysroot, BootDir: f.boot, Ref: "os", Root: "/dev/vda", AllowInsecure: true,
		Init: init, Initramfs: InitramfsDracutGeneric, DracutModule: filepath.Join(wd, "../../dracut/90cfs-deploy"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.InitramfsBuilt || res.InitramfsReused {
		t.Errorf("result %+v", res)
	}
	out, err := exec.Command("lsinitrd", res.Initramfs).CombinedOutput()
	if err != nil {
		t.Fatalf("lsinitrd %s: %v\n%s", res.Initramfs, err, out)
	}
	for _, want := range []string{"cfs-init", "erofs", "overlay"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the dracut image lacks %s", want)
		}
	}
	if _, err := Rollout(Options{Repo: f.r, Sysroot: f.sysroot, BootDir: f.boot, Ref: "os", Root: "/dev/vda", AllowInsecure: true,
		Init: init, Initramfs: "mkinitcpio"}); err == nil || !strings.Contains(err.Error(), "mkinitcpio") {
		t.Errorf("unknown builder: %v", err)
	}
}
