package bootcfg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func testEntry(id string) *Entry {
	return &Entry{
		ID:      id,
		Title:   "Test OS " + id,
		Version: "1.0",
		Linux:   "/" + id + "/vmlinuz",
		Initrd:  []string{"/" + id + "/initramfs.img"},
		Options: []string{"root=UUID=abcd rw composefs=" + hexA},
	}
}

// dirNames lists dir, so tests can check that nothing else (no temporary
// file) is there.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteReadEntries(t *testing.T) {
	dir := t.TempDir()
	a := testEntry("cfs-a")
	b := testEntry("cfs-b")
	b.Counter = &BootCounter{Left: 3}
	for _, e := range []*Entry{a, b} {
		if err := WriteEntry(dir, e); err != nil {
			t.Fatal(err)
		}
	}
	if a.File != "cfs-a.conf" || b.File != "cfs-b+3.conf" {
		t.Errorf("File = %q, %q", a.File, b.File)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"cfs-a.conf", "cfs-b+3.conf"}) {
		t.Errorf("directory holds %q", got)
	}
	data, err := os.ReadFile(filepath.Join(dir, "cfs-a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(a.Marshal()) {
		t.Errorf("file holds %q", data)
	}
	st, err := os.Stat(filepath.Join(dir, "cfs-a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// Boot entries are not secret: 0644 less the umask, not the 0600
	// of os.CreateTemp.
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	if want := fs.FileMode(0o644 &^ umask); st.Mode().Perm() != want {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), want)
	}

	got, err := ReadEntries(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Without sort keys, by ID with the newest (b > a) first.
	if len(got) != 2 || !reflect.DeepEqual(got[0], b) || !reflect.DeepEqual(got[1], a) {
		t.Errorf("ReadEntries = %+v %+v", got[0], got[1])
	}
}

func TestWriteEntryReplaces(t *testing.T) {
	dir := t.TempDir()
	e := testEntry("cfs-x")
	e.Counter = &BootCounter{Left: 2, Done: 1}
	if err := WriteEntry(dir, e); err != nil {
		t.Fatal(err)
	}
	// The same entry again under the same name: replaced in place.
	e.Title = "changed"
	if err := WriteEntry(dir, e); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"cfs-x+2-1.conf"}) {
		t.Errorf("directory holds %q", got)
	}
	// Blessed: the counted file goes, and only the plain name is left.
	e.Counter = nil
	if err := WriteEntry(dir, e); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"cfs-x.conf"}) {
		t.Errorf("directory holds %q", got)
	}
	got, err := ReadEntries(dir)
	if err != nil || len(got) != 1 || got[0].Title != "changed" || got[0].Counter != nil {
		t.Errorf("ReadEntries = %+v, %v", got, err)
	}
}

func TestWriteEntryFailures(t *testing.T) {
	t.Run("parent is a file", func(t *testing.T) {
		base := t.TempDir()
		file := filepath.Join(base, "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		err := WriteEntry(filepath.Join(file, "entries"), testEntry("cfs-a"))
		if err == nil || !strings.Contains(err.Error(), "cfs-a") {
			t.Fatalf("error %v", err)
		}
		if got := dirNames(t, base); !slices.Equal(got, []string{"file"}) {
			t.Errorf("left behind %q", got)
		}
	})
	t.Run("rename fails", func(t *testing.T) {
		// A non-empty directory where the entry should go: the
		// temporary file is written, and the rename onto it fails.
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "cfs-a.conf", "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := WriteEntry(dir, testEntry("cfs-a"))
		if err == nil || !strings.Contains(err.Error(), "rename") {
			t.Fatalf("error %v", err)
		}
		if got := dirNames(t, dir); !slices.Equal(got, []string{"cfs-a.conf"}) {
			t.Errorf("left behind %q", got)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root can write to a read-only directory")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		if err := WriteEntry(dir, testEntry("cfs-a")); err == nil {
			t.Fatal("no error")
		}
		if got := dirNames(t, dir); len(got) != 0 {
			t.Errorf("left behind %q", got)
		}
	})
	t.Run("invalid entry", func(t *testing.T) {
		dir := t.TempDir()
		e := testEntry("cfs-a")
		e.Title = "two\nlines"
		if err := WriteEntry(dir, e); err == nil {
			t.Fatal("no error")
		}
		if got := dirNames(t, dir); len(got) != 0 {
			t.Errorf("left behind %q", got)
		}
	})
}

func TestReadEntriesSkipsAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.conf", "title Good\nlinux /l\n")
	write("UPPER.CONF", "title Upper\nlinux /l\n")
	write(".good.conf.tmp-123", "title Temp\n")
	write(".hidden.conf", "title Hidden\n")
	write("auto-windows.conf", "title Auto\n")
	write("notes.txt", "title Notes\n")
	write("bad.conf", "title ok\ninitrd\n")
	if err := os.Mkdir(filepath.Join(dir, "dir.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := ReadEntries(dir)
	if err == nil || !strings.Contains(err.Error(), "bad.conf") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %v, want one naming bad.conf line 2", err)
	}
	var titles []string
	for _, e := range entries {
		titles = append(titles, e.ID+":"+e.Title)
	}
	// The good entries still come back, in menu order.
	if !slices.Equal(titles, []string{"UPPER:Upper", "good:Good"}) {
		t.Errorf("entries %q", titles)
	}

	if _, err := ReadEntries(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestRemoveEntry(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"cfs-a.conf", "cfs-a+1-2.conf", "cfs-ab.conf", "cfs-a.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("linux /l\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveEntry(dir, "cfs-a"); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"cfs-a.txt", "cfs-ab.conf"}) {
		t.Errorf("directory holds %q", got)
	}
	if err := RemoveEntry(dir, "cfs-a"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second RemoveEntry: %v, want ErrNotExist", err)
	}
}
