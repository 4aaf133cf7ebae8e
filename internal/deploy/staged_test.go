package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// rolloutWith rolls out ref through the host with extra options.
func (f *fixture) rolloutWith(ref string, o Options) (*Result, error) {
	f.t.Helper()
	o.Ref, o.Root, o.Init, o.AllowInsecure = ref, "/dev/vda", f.init, true
	if o.KeepRollback == nil {
		keep := 10
		o.KeepRollback = &keep
	}
	return f.host().Rollout(o)
}

func entryNames(t *testing.T, boot string) []string {
	t.Helper()
	des, err := os.ReadDir(EntriesDir(boot))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func TestBootCounting(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	f.rolloutOn(v[0].ID.String(), 10)
	if _, err := f.rolloutWith(v[1].ID.String(), Options{Tries: 2}); err != nil {
		t.Fatal(err)
	}
	counted := EntryID(v[1].Image) + "+2.conf"
	if !slices.Contains(entryNames(t, f.boot), counted) {
		t.Fatalf("entries %v, want %s", entryNames(t, f.boot), counted)
	}
	checkDefault(t, f.boot, EntryID(v[1].Image))

	// mark-good needs the running system, and renames the booted entry.
	if _, _, err := f.host().MarkGood(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("mark-good offline: %v", err)
	}
	// The boot loader tried it once: +2 became +1-1.
	f.must(os.Rename(filepath.Join(EntriesDir(f.boot), counted), filepath.Join(EntriesDir(f.boot), EntryID(v[1].Image)+"+1-1.conf")))
	f.runAs(v[1].Image)
	ds, _ := f.host().Status()
	if c := ds.List[0].Entry.Counter; c == nil || c.Left != 1 || c.Done != 1 || ds.List[0].Bad() {
		t.Errorf("counter %+v", c)
	}
	file, was, err := f.host().MarkGood()
	f.must(err)
	if !was || file != EntryID(v[1].Image)+".conf" || !slices.Contains(entryNames(t, f.boot), file) {
		t.Errorf("mark-good: %s %v; entries %v", file, was, entryNames(t, f.boot))
	}
	if _, was, err = f.host().MarkGood(); err != nil || was {
		t.Errorf("second mark-good: %v %v", was, err)
	}
	checkDefault(t, f.boot, EntryID(v[1].Image))

	// A deployment whose tries ran out sorts last, is no merge base and
	// no rollback target.
	f.must(os.Remove(filepath.Join(f.sysroot, "..", "booted.json")))
	if _, err := f.rolloutWith(v[2].ID.String(), Options{Tries: 1}); err != nil {
		t.Fatal(err)
	}
	e := EntryID(v[2].Image)
	f.must(os.Rename(filepath.Join(EntriesDir(f.boot), e+"+1.conf"), filepath.Join(EntriesDir(f.boot), e+"+0-1.conf")))
	if got := f.order(); !slices.Equal(got, []verity.Digest{v[1].Image, v[0].Image, v[2].Image}) {
		t.Errorf("order with an exhausted entry %v", got)
	}
	ds, _ = f.host().Status()
	if !ds.List[2].Bad() || ds.List[0].Bad() {
		t.Errorf("bad flags wrong")
	}
	// Rollback to v0 works; a bad rollback target is refused.
	if _, err := f.host().Rollback(); err != nil {
		t.Fatal(err)
	}
	f.must(os.Rename(filepath.Join(EntriesDir(f.boot), EntryID(v[1].Image)+".conf"), filepath.Join(EntriesDir(f.boot), EntryID(v[1].Image)+"+0-3.conf")))
	if _, err := f.host().Rollback(); !errors.Is(err, ErrBad) {
		t.Errorf("rollback to a bad deployment: %v", err)
	}
}

func TestStaged(t *testing.T) {
	f := newFixture(t)
	v := f.versions(3)
	r0 := f.rolloutOn(v[0].ID.String(), 10)
	if _, err := f.rolloutWith(v[1].ID.String(), Options{Stage: true}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("staging offline: %v", err)
	}
	f.runAs(v[0].Image)
	etc := filepath.Join(r0.StateDir, "etc")
	f.must(os.WriteFile(filepath.Join(etc, "before-stage"), []byte("1"), 0o644))
	res, err := f.rolloutWith(v[1].ID.String(), Options{Stage: true, Tries: 3})
	f.must(err)
	if !res.Staged || res.Entry != "" {
		t.Fatalf("staged result %+v", res)
	}
	if got := entryNames(t, f.boot); len(got) != 1 {
		t.Errorf("staging wrote an entry: %v", got)
	}
	ds, _ := f.host().Status()
	if ds.Staged == nil || ds.Staged.Image != v[1].Image || ds.Staged.Index != 1 || ds.Staged.Problem != "" || len(ds.List) != 1 {
		t.Fatalf("status with a staged deployment: %+v", ds.Staged)
	}
	// cleanup keeps what the staged deployment needs.
	rep, err := f.host().Cleanup()
	f.must(err)
	if len(rep.States) != 0 || len(rep.BootFiles) != 0 {
		t.Errorf("cleanup removed the staged deployment's files: %+v", rep)
	}
	// kargs edits the staged deployment by default.
	_, cl, err := f.host().EditKargs(-1, []KargsEdit{{"append", "staged=1"}})
	f.must(err)
	if !strings.HasSuffix(cl.String(), " staged=1") {
		t.Errorf("staged kargs %q", cl)
	}
	if _, cl, _ := f.host().EditKargs(0, nil); strings.Contains(cl.String(), "staged=1") {
		t.Errorf("kargs of the staged deployment went to the default")
	}

	// An edit after staging survives finalize.
	f.must(os.WriteFile(filepath.Join(etc, "after-stage"), []byte("2"), 0o644))
	fin, err := f.host().Finalize()
	f.must(err)
	if fin == nil || fin.Image != v[1].Image || fin.Merge == nil {
		t.Fatalf("finalize %+v", fin)
	}
	for _, name := range []string{"before-stage", "after-stage"} {
		if _, err := os.Stat(filepath.Join(StateDir(f.sysroot, v[1].Image), "etc", name)); err != nil {
			t.Errorf("finalized /etc lacks %s: %v", name, err)
		}
	}
	if !slices.Contains(entryNames(t, f.boot), EntryID(v[1].Image)+"+3.conf") {
		t.Errorf("finalized entry: %v", entryNames(t, f.boot))
	}
	checkDefault(t, f.boot, EntryID(v[1].Image))
	ds, _ = f.host().Status()
	if ds.Staged != nil || !strings.Contains(strings.Join(ds.List[0].Entry.Options, " "), "staged=1") {
		t.Errorf("after finalize: staged %+v, options %v", ds.Staged, ds.List[0].Entry.Options)
	}
	if fin, err := f.host().Finalize(); fin != nil || err != nil {
		t.Errorf("finalize without a staged deployment: %+v %v", fin, err)
	}

	// Staging again replaces; rollback discards.
	_, err = f.rolloutWith(v[2].ID.String(), Options{Stage: true})
	f.must(err)
	res, err = f.rolloutWith(v[0].ID.String(), Options{Stage: true})
	f.must(err)
	if res.Discarded != v[2].Image {
		t.Errorf("second stage discarded %s", res.Discarded)
	}
	if _, err := os.Stat(StateDir(f.sysroot, v[2].Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the replaced staged state is still there: %v", err)
	}
	rb, err := f.host().Rollback()
	f.must(err)
	if rb.Discarded != v[0].Image || rb.Default.Image != v[0].Image {
		t.Errorf("rollback with a staged deployment: %+v", rb)
	}
	if ds, _ := f.host().Status(); ds.Staged != nil {
		t.Errorf("rollback left the staged deployment")
	}
}

// TestFinalizeFailure: a finalize that fails leaves the old default,
// forgets the staged deployment and says why in the next status.
func TestFinalizeFailure(t *testing.T) {
	f := newFixture(t)
	v := f.versions(2)
	f.rolloutOn(v[0].ID.String(), 10)
	f.runAs(v[0].Image)
	_, err := f.rolloutWith(v[1].ID.String(), Options{Stage: true})
	f.must(err)
	failpoint = func(s string) error {
		if s == "entry" {
			return errors.New("injected: no space left on device")
		}
		return nil
	}
	_, err = f.host().Finalize()
	failpoint = nil
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("finalize: %v", err)
	}
	checkDefault(t, f.boot, EntryID(v[0].Image))
	ds, _ := f.host().Status()
	if ds.Staged != nil || len(ds.List) != 1 {
		t.Errorf("after a failed finalize: %+v", ds)
	}
	ff, err := f.host().FinalizeFailure()
	f.must(err)
	if ff == nil || ff.Image != v[1].Image || !strings.Contains(ff.Error, "no space left") || ff.Time.IsZero() {
		t.Errorf("failure record %+v", ff)
	}
	if _, err := os.Stat(StateDir(f.sysroot, v[1].Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed deployment's state is left: %v", err)
	}
	checkNoTemps(t, f)
	// The next successful rollout clears the record.
	f.rolloutOn(v[1].ID.String(), 10)
	if ff, _ := f.host().FinalizeFailure(); ff != nil {
		t.Errorf("failure record after a good rollout: %+v", ff)
	}
	if _, err := os.Stat(filepath.Join(f.sysroot, sysroot.FinalizeFailed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v", err)
	}
}
