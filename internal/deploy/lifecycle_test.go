package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// host opens the fixture's sysroot for the lifecycle verbs, with the
// running system's record and command line read from files the test
// controls (absent: an offline sysroot).
func (f *fixture) host() *Host {
	f.t.Helper()
	h, err := OpenHost(HostOptions{Sysroot: f.sysroot, Boot: f.boot, Repo: f.r})
	f.must(err)
	h.RunDir = filepath.Join(f.sysroot, "..")
	h.Cmdline = filepath.Join(f.sysroot, "..", "cmdline")
	return h
}

// boot makes the test's "running system" the deployment of img, as
// cfs-init would record it.
func (f *fixture) runAs(img verity.Digest) {
	f.t.Helper()
	rec := `{"mode": "pid1", "digest": "` + img.String() + `", "sysroot": "` + f.sysroot + `"}`
	f.must(os.WriteFile(filepath.Join(f.sysroot, "..", "booted.json"), []byte(rec), 0o644))
	f.must(os.WriteFile(filepath.Join(f.sysroot, "..", "cmdline"), []byte("root=/dev/vda rw composefs="+img.String()+"\n"), 0o644))
}

// rolloutOn rolls out ref through the host with retention as given.
func (f *fixture) rolloutOn(ref string, keep int, kargs ...string) *Result {
	f.t.Helper()
	h := f.host()
	res, err := h.Rollout(Options{Ref: ref, Root: "/dev/vda", Kargs: kargs, Init: f.init, AllowInsecure: true, KeepRollback: &keep})
	f.must(err)
	return res
}

// order returns the images of the deployments in boot order.
func (f *fixture) order() []verity.Digest {
	f.t.Helper()
	ds, err := f.host().Status()
	f.must(err)
	var out []verity.Digest
	for _, d := range ds.List {
		if d.Problem != "" {
			f.t.Errorf("deployment %d: %s", d.Index, d.Problem)
		}
		out = append(out, d.Image)
	}
	return out
}

// newKernel changes the kernel so the next commit gets boot files of its
// own.
func (f *fixture) newKernel(tag string) {
	f.t.Helper()
	k, err := os.OpenFile(filepath.Join(f.src, "usr/lib/modules", f.kver, "vmlinuz"), os.O_APPEND|os.O_WRONLY, 0)
	f.must(err)
	_, err = k.Write([]byte(tag))
	f.must(err)
	f.must(k.Close())
}

// versions commits n versions of the tree, each with another
// etc/version; with newKernels each also gets a kernel of its own.
func (f *fixture) versions(n int, newKernels ...bool) []*repo.CommitResult {
	var out []*repo.CommitResult
	for i := range n {
		if len(newKernels) > 0 && newKernels[0] && i > 0 {
			f.newKernel(string(rune('a' + i)))
		}
		f.write("etc/version", strings.Repeat("v", i+1)+"\n", 0o644)
		out = append(out, f.commit("os", string(rune('1'+i))+".0"))
	}
	return out
}

func TestDeploymentOrder(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	for _, c := range v {
		f.rolloutOn(c.ID.String(), 10)
	}
	if got, want := f.order(), []verity.Digest{v[2].Image, v[1].Image, v[0].Image}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want newest first %v", got, want)
	}
	ds, err := f.host().Status()
	f.must(err)
	for i, d := range ds.List {
		if d.Default != (i == 0) || d.Rollback != (i == 1) || d.Booted || d.Index != i {
			t.Errorf("deployment %d flags %+v", i, d)
		}
		if d.Entry.SortKey != SortKey || d.Entry.Version != string(rune('3'-i)) {
			t.Errorf("deployment %d entry sort-key %q version %q", i, d.Entry.SortKey, d.Entry.Version)
		}
		if d.Origin.Version != string(rune('3'-i))+".0" || d.Stateroot != "default" {
			t.Errorf("deployment %d origin %+v", i, d.Origin)
		}
	}

	// Deploying an image already deployed moves it to the front, keeps
	// its /etc and makes no second entry.
	edited := filepath.Join(StateDir(f.sysroot, v[0].Image), "etc/hostname")
	f.must(os.WriteFile(edited, []byte("mine\n"), 0o644))
	res := f.rolloutOn(v[0].ID.String(), 10)
	if res.StateCreated || res.Merge != nil {
		t.Errorf("redeploy recreated state: %+v", res)
	}
	if readFile(t, edited) != "mine\n" {
		t.Errorf("redeploy replaced the /etc of the deployment")
	}
	if got, want := f.order(), []verity.Digest{v[0].Image, v[2].Image, v[1].Image}; !slices.Equal(got, want) {
		t.Errorf("order after redeploy %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(EntriesDir(f.boot))
	if len(entries) != 3 {
		t.Errorf("%d entry files, want 3", len(entries))
	}
	checkDefault(t, f.boot, EntryID(v[0].Image))
}

func TestRollback(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2)
	f.rolloutOn(v[0].ID.String(), 10)
	if _, err := f.host().Rollback(); !errors.Is(err, ErrOnlyOne) {
		t.Errorf("rollback with one deployment: %v", err)
	}
	f.rolloutOn(v[1].ID.String(), 10)
	start := f.order()
	rb, err := f.host().Rollback()
	f.must(err)
	if rb.Default.Image != v[0].Image || !rb.Discarded.IsZero() {
		t.Errorf("rolled back to %s, want %s", rb.Default.Image, v[0].Image)
	}
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[0].Image, v[1].Image}) {
		t.Errorf("after rollback %v", got)
	}
	checkDefault(t, f.boot, EntryID(v[0].Image))
	if _, err := f.host().Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := f.order(); !slices.Equal(got, start) {
		t.Errorf("rollback twice: %v, want the start %v", got, start)
	}
	checkNoTemps(t, f)
}

func TestStatusBooted(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2)
	f.rolloutOn(v[0].ID.String(), 10)
	f.rolloutOn(v[1].ID.String(), 10)

	// Offline: no record.
	ds, err := f.host().Status()
	f.must(err)
	if ds.Running || ds.Booted != nil {
		t.Errorf("offline sysroot shows a booted deployment")
	}
	// Running v1 (the rollback deployment).
	f.runAs(v[0].Image)
	ds, err = f.host().Status()
	f.must(err)
	if !ds.Running || ds.Booted == nil || ds.Booted.Index != 1 || !ds.List[1].Booted || ds.List[0].Booted {
		t.Errorf("booted: running %v %+v", ds.Running, ds.Booted)
	}
	// A record for another sysroot, or one the command line contradicts,
	// is not this boot.
	rec := filepath.Join(f.sysroot, "..", "booted.json")
	f.must(os.WriteFile(rec, []byte(`{"digest": "`+v[0].Image.String()+`", "sysroot": "/nonexistent"}`), 0o644))
	if ds, _ = f.host().Status(); ds.Booted != nil {
		t.Errorf("record of another sysroot counted as booted")
	}
	f.runAs(v[0].Image)
	f.must(os.WriteFile(filepath.Join(f.sysroot, "..", "cmdline"), []byte("composefs="+v[1].Image.String()), 0o644))
	if ds, _ = f.host().Status(); ds.Booted != nil {
		t.Errorf("record contradicted by /proc/cmdline counted as booted")
	}
}

func TestUndeploy(t *testing.T) {
	f := newFixture(t)
	v0 := f.versions(1)[0]
	f.rolloutOn(v0.ID.String(), 10)
	if _, err := f.host().Undeploy(0); !errors.Is(err, ErrLast) {
		t.Errorf("undeploy of the only deployment: %v", err)
	}
	f.newKernel("v2")
	f.write("etc/version", "two\n", 0o644)
	v1 := f.commit("os", "2.0")
	r1 := f.rolloutOn(v1.ID.String(), 10)
	r0 := f.rolloutOn(v0.ID.String(), 10) // v0 back in front; v1 is index 1
	if _, err := f.host().Undeploy(2); !errors.Is(err, ErrNoDeployment) {
		t.Errorf("unknown index: %v", err)
	}
	f.runAs(v1.Image)
	if _, err := f.host().Undeploy(1); !errors.Is(err, ErrBooted) {
		t.Errorf("undeploy of the booted deployment: %v", err)
	}
	f.runAs(v0.Image)
	rm, err := f.host().Undeploy(1)
	f.must(err)
	if rm.Image != v1.Image || !rm.State || !slices.Equal(rm.Files, []string{r1.Kernel}) {
		t.Errorf("removed %+v; want the state and only the kernel of its own (%s)", rm, r1.Kernel)
	}
	if _, err := os.Stat(StateDir(f.sysroot, v1.Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state left: %v", err)
	}
	for _, p := range []string{r0.Kernel, r0.Initramfs} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the remaining deployment lost %s: %v", p, err)
		}
	}
	if got := f.order(); !slices.Equal(got, []verity.Digest{v0.Image}) {
		t.Errorf("left %v", got)
	}
	checkNoTemps(t, f)
}

func TestRetention(t *testing.T) {
	f := newFixture(t)
	v := f.versions(4, true)
	r0 := f.rolloutOn(v[0].ID.String(), 1)
	f.rolloutOn(v[1].ID.String(), 1)
	res := f.rolloutOn(v[2].ID.String(), 1)
	// New default, one rollback: the oldest goes, with its kernel.
	if len(res.Removed) != 1 || res.Removed[0].Image != v[0].Image || !slices.Contains(res.Removed[0].Files, r0.Kernel) {
		t.Fatalf("retention removed %+v, want %s with %s", res.Removed, v[0].Image, r0.Kernel)
	}
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[2].Image, v[1].Image}) {
		t.Errorf("after retention %v", got)
	}
	if _, err := os.Stat(r0.Kernel); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the removed deployment's kernel is still there: %v", err)
	}
	// Pinned and booted deployments stay whatever the count.
	_, err := f.host().SetPinned(1, true) // v1
	f.must(err)
	f.runAs(v[2].Image)
	res = f.rolloutOn(v[3].ID.String(), 0)
	if len(res.Removed) != 0 {
		t.Errorf("retention removed %+v; the booted and the pinned deployment must stay", res.Removed)
	}
	ds, err := f.host().Status()
	f.must(err)
	if len(ds.List) != 3 || !ds.List[2].Pinned || ds.List[2].Image != v[1].Image {
		t.Errorf("after pin: %v", f.order())
	}
	_, err = f.host().SetPinned(2, false)
	f.must(err)
	// keep-rollback 0 with v3 booted: v2 (booted) stays, unpinned v1 goes.
	f.runAs(v[3].Image)
	res = f.rolloutOn(v[0].ID.String(), 0)
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[0].Image, v[3].Image}) {
		t.Errorf("after unpin: %v (removed %+v)", got, res.Removed)
	}
}

func TestKargs(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2)
	f.rolloutOn(v[0].ID.String(), 10, "quiet", "console=ttyS0")
	h := f.host()
	_, cl, err := h.EditKargs(0, nil)
	f.must(err)
	if cl.String() != "root=/dev/vda rw composefs=?"+v[0].Image.String()+" quiet console=ttyS0" {
		t.Errorf("kargs %q", cl)
	}
	_, cl, err = h.EditKargs(0, []KargsEdit{{"append", "loglevel=3"}, {"delete", "quiet"}, {"replace", "console=tty0"}})
	f.must(err)
	want := "root=/dev/vda rw composefs=?" + v[0].Image.String() + " console=tty0 loglevel=3"
	if cl.String() != want {
		t.Errorf("edited kargs %q, want %q", cl, want)
	}
	e := onlyEntry(t, f.boot, EntryID(v[0].Image))
	if e.Cmdline().String() != want || e.Version != "1" {
		t.Errorf("entry after kargs: %q version %s", e.Cmdline(), e.Version)
	}
	before := readFile(t, filepath.Join(EntriesDir(f.boot), e.File))
	for _, bad := range [][]KargsEdit{
		{{"append", "root=/dev/sdb"}},
		{{"replace", "composefs=abc"}},
		{{"append", "rootwait=forever"}},
		{{"append", "cfs.reboot-delay=99999"}},
		{{"append", "init=sbin/init"}},
		{{"append", "cfs.debug=maybe"}},
		{{"delete", "nosuch"}},
		{{"delete", "ro"}},
		{{"replace", "novalue"}},
		{{"append", "a b"}},
	} {
		if _, _, err := h.EditKargs(0, bad); !errors.Is(err, ErrBadKarg) {
			t.Errorf("edit %+v: %v, want a refusal", bad, err)
		}
	}
	if readFile(t, filepath.Join(EntriesDir(f.boot), e.File)) != before {
		t.Errorf("a refused edit changed the entry")
	}
	// A new deployment inherits the edited arguments, and --karg adds.
	res := f.rolloutOn(v[1].ID.String(), 10, "splash")
	if !strings.HasSuffix(res.Cmdline, " console=tty0 loglevel=3 splash") || !strings.Contains(res.Cmdline, "composefs=?"+v[1].Image.String()) {
		t.Errorf("new deployment's cmdline %q", res.Cmdline)
	}
	// A counted entry keeps its counter through an edit.
	ds, _ := h.Status()
	old := filepath.Join(EntriesDir(f.boot), ds.List[0].Entry.File)
	counted := filepath.Join(EntriesDir(f.boot), EntryID(v[1].Image)+"+2-1.conf")
	f.must(os.Rename(old, counted))
	_, _, err = h.EditKargs(0, []KargsEdit{{"append", "x=1"}})
	f.must(err)
	if _, err := os.Stat(counted); err != nil {
		t.Errorf("counted entry renamed by kargs: %v", err)
	}
}

func TestCleanup(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2, true)
	f.rolloutOn(v[0].ID.String(), 10)
	r1 := f.rolloutOn(v[1].ID.String(), 10)
	// A crash after undeploy took the entry away leaves the state and the
	// kernel behind.
	f.must(bootcfg.RemoveEntry(EntriesDir(f.boot), EntryID(v[1].Image)))
	orphan := filepath.Join(f.boot, "cfs-deploy", "vmlinuz-orphan")
	f.must(os.WriteFile(orphan, []byte("x"), 0o644))
	foreign := filepath.Join(f.boot, "vmlinuz-foreign")
	f.must(os.WriteFile(foreign, []byte("x"), 0o644))
	rep, err := f.host().Cleanup()
	f.must(err)
	if !slices.Equal(rep.States, []string{StateDir(f.sysroot, v[1].Image)}) || len(rep.BootFiles) != 2 ||
		!slices.Contains(rep.BootFiles, r1.Kernel) || !slices.Contains(rep.BootFiles, orphan) {
		t.Errorf("cleanup %+v", rep)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("cleanup removed a boot file that is not cfs-deploy's: %v", err)
	}
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[0].Image}) {
		t.Errorf("cleanup changed the deployments: %v", got)
	}
	// With the entries gone (a wrong --boot, say), cleanup refuses
	// rather than removing every deployment's state.
	h, err := OpenHost(HostOptions{Sysroot: f.sysroot, Boot: t.TempDir(), Repo: f.r})
	f.must(err)
	if _, err := h.Cleanup(); !errors.Is(err, ErrNoEntries) {
		t.Errorf("cleanup with an empty boot directory: %v", err)
	}
	if _, err := os.Stat(StateDir(f.sysroot, v[0].Image)); err != nil {
		t.Errorf("state removed: %v", err)
	}
}

// TestMergeBase: the new deployment's /etc starts from the booted
// deployment's local changes on the running system, from the default's
// offline, and never from a deployment the boot loader gave up on.
func TestMergeBase(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	f.rolloutOn(v[0].ID.String(), 10)
	f.rolloutOn(v[1].ID.String(), 10)
	for i, c := range v[:2] {
		f.must(os.WriteFile(filepath.Join(StateDir(f.sysroot, c.Image), "etc/local"), []byte{byte('a' + i)}, 0o644))
	}
	f.runAs(v[0].Image) // running the rollback deployment
	res := f.rolloutOn(v[2].ID.String(), 10)
	if res.MergedFrom != v[0].Image || readFile(t, filepath.Join(res.StateDir, "etc/local")) != "a" {
		t.Errorf("running system: merged from %s", res.MergedFrom)
	}
	f.must(os.Remove(filepath.Join(f.sysroot, "..", "booted.json")))
	_, err := f.host().Undeploy(0)
	f.must(err)
	// Offline the default (v1) is the base, unless its counter ran out.
	ds, _ := f.host().Status()
	if ds.List[0].Image != v[1].Image {
		t.Fatalf("order %v", f.order())
	}
	e := ds.List[0].Entry
	f.must(os.Rename(filepath.Join(EntriesDir(f.boot), e.File), filepath.Join(EntriesDir(f.boot), e.ID+"+0-3.conf")))
	res = f.rolloutOn(v[2].ID.String(), 10)
	if res.MergedFrom != v[0].Image {
		t.Errorf("merged from %s, want %s (the bad deployment %s is no base)", res.MergedFrom, v[0].Image, v[1].Image)
	}
}

func TestDamagedDeployments(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	for _, c := range v {
		f.rolloutOn(c.ID.String(), 10)
	}
	// v0's origin.json is corrupt; v1's /etc is a symlink.
	f.must(os.WriteFile(filepath.Join(StateDir(f.sysroot, v[0].Image), sysroot.OriginFile), []byte("{"), 0o644))
	etc := filepath.Join(StateDir(f.sysroot, v[1].Image), "etc")
	f.must(os.RemoveAll(etc))
	f.must(os.Symlink("/etc", etc))
	ds, err := f.host().Status()
	f.must(err)
	if len(ds.List) != 3 || ds.List[0].Problem != "" || !strings.Contains(ds.List[1].Problem, "symbolic link") || !strings.Contains(ds.List[2].Problem, "origin") {
		for _, d := range ds.List {
			t.Errorf("%d: %q", d.Index, d.Problem)
		}
	}
	if _, err := f.host().Rollback(); !errors.Is(err, ErrDamaged) {
		t.Errorf("rollback to a damaged deployment: %v", err)
	}
	if _, _, err := f.host().EditKargs(1, []KargsEdit{{"append", "x"}}); !errors.Is(err, ErrDamaged) {
		t.Errorf("kargs of a damaged deployment: %v", err)
	}
	// A sysroot that is not one.
	if _, err := OpenHost(HostOptions{Sysroot: t.TempDir()}); !errors.Is(err, sysroot.ErrNotSysroot) {
		t.Errorf("empty directory as sysroot: %v", err)
	}
}

// TestDeployImageRefs: every deployment's image is named under
// images/refs/, as composefs-rs's collector needs, and only while it is
// deployed.
func TestDeployImageRefs(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	for _, c := range v {
		f.rolloutOn(c.ID.String(), 10)
	}
	refs := func() []string {
		m, err := f.r.ImageRefs(DeployImageRefPrefix)
		f.must(err)
		var names []string
		for n, img := range m {
			if n != deployRef(img) {
				t.Errorf("ref %s names %s", n, img)
			}
			names = append(names, n)
		}
		slices.Sort(names)
		return names
	}
	want := []string{deployRef(v[0].Image), deployRef(v[1].Image), deployRef(v[2].Image)}
	slices.Sort(want)
	if got := refs(); !slices.Equal(got, want) {
		t.Fatalf("refs %v, want %v", got, want)
	}
	_, err := f.host().Undeploy(2) // v0
	f.must(err)
	if got := refs(); slices.Contains(got, deployRef(v[0].Image)) || len(got) != 2 {
		t.Errorf("after undeploy: %v", got)
	}
	// A stale name (an older version, a crash) goes at cleanup; a
	// missing one comes back.
	f.must(f.r.SetImageRef(deployRef(v[0].Image), v[0].Image))
	f.must(f.r.RemoveImageRef(deployRef(v[1].Image)))
	_, err = f.host().Cleanup()
	f.must(err)
	want = []string{deployRef(v[1].Image), deployRef(v[2].Image)}
	slices.Sort(want)
	if got := refs(); !slices.Equal(got, want) {
		t.Errorf("after cleanup %v, want %v", got, want)
	}
}

// TestFullBoot: a boot directory without room for a new kernel fails the
// rollout with the file and the reason, leaves no partial file, and the
// deployments that were there still boot.
func TestFullBoot(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2, true)
	f.must(os.MkdirAll(f.boot, 0o755))
	kernel, err := os.Stat(filepath.Join(f.src, "usr/lib/modules", f.kver, "vmlinuz"))
	f.must(err)
	// Room for one kernel and its initramfs, not two.
	size := kernel.Size() + 8<<20
	if err := unix.Mount("tmpfs", f.boot, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(f.boot, unix.MNT_DETACH) })
	r0 := f.rolloutOn(v[0].ID.String(), 10)
	before := entryNames(t, f.boot)
	_, err = f.rolloutWith(v[1].ID.String(), Options{})
	if err == nil || !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "vmlinuz-") {
		t.Fatalf("rollout into a full boot directory: %v", err)
	}
	if got := entryNames(t, f.boot); !slices.Equal(got, before) {
		t.Errorf("entries %v, were %v", got, before)
	}
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[0].Image}) {
		t.Errorf("deployments %v", got)
	}
	for _, p := range []string{r0.Kernel, r0.Initramfs} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("the old deployment's %s: %v", p, err)
		}
	}
	if _, err := os.Stat(StateDir(f.sysroot, v[1].Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed rollout left its state: %v", err)
	}
	checkNoTemps(t, f)
}
