package vmtest

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDebianKey(t *testing.T) {
	a := Debian{Suite: "bookworm", Variant: "minbase", Packages: []string{"udev", "dbus"}}
	b := Debian{Suite: "bookworm", Variant: "minbase", Packages: []string{"dbus", "udev"}}
	if a.Key() != b.Key() {
		t.Errorf("package order changed the key: %s, %s", a.Key(), b.Key())
	}
	for _, other := range []Debian{
		{Suite: "trixie", Variant: "minbase", Packages: []string{"udev", "dbus"}},
		{Suite: "bookworm", Variant: "apt", Packages: []string{"udev", "dbus"}},
		{Suite: "bookworm", Variant: "minbase", Packages: []string{"udev", "dbus", "kmod"}},
		{Suite: "bookworm", Variant: "minbase", Packages: []string{"udev", "dbus"}, DpkgOpts: []string{"path-exclude=/usr/share/man/*"}},
	} {
		if other.Key() == a.Key() {
			t.Errorf("%+v has the key of %+v", other, a)
		}
	}
	if n := DebianSystemd.CacheName(); !strings.HasPrefix(n, "debian-bookworm-") || !strings.HasSuffix(n, ".tar") {
		t.Errorf("cache name %q", n)
	}
	args := DebianSystemd.mmdebstrapArgs("/out.tar", "http://mirror/debian")
	if got := args[len(args)-3:]; !reflect.DeepEqual(got, []string{"bookworm", "/out.tar", "http://mirror/debian"}) {
		t.Errorf("mmdebstrap args end %q", got)
	}
}

func TestBuildCached(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "tree.tar")

	// A failing build leaves neither the file nor its temporary.
	_, err := BuildCached(p, func(tmp string) error {
		if err := os.WriteFile(tmp, []byte("half"), 0o644); err != nil {
			return err
		}
		return errors.New("network down")
	})
	if err == nil || !strings.Contains(err.Error(), "network down") {
		t.Fatalf("failed build: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "tree.tar*")); len(left) != 1 || !strings.HasSuffix(left[0], ".lock") {
		t.Fatalf("a failed build left %v", left)
	}

	// A build that writes nothing is an error, not an empty cache entry.
	if _, err := BuildCached(p, func(string) error { return nil }); err == nil {
		t.Fatal("a build that wrote no file succeeded")
	}

	calls := 0
	build := func(tmp string) error {
		calls++
		return os.WriteFile(tmp, []byte("tree"), 0o644)
	}
	built, err := BuildCached(p, build)
	if err != nil || !built {
		t.Fatalf("first build: built %v, %v", built, err)
	}
	built, err = BuildCached(p, build)
	if err != nil || built || calls != 1 {
		t.Fatalf("second call: built %v, %v, %d builds", built, err, calls)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "tree" {
		t.Fatalf("cached file: %q, %v", b, err)
	}
}

func TestAptMirror(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "sources.list")
	d := filepath.Join(dir, "sources.list.d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := AptMirror(list, d); got != "" {
		t.Errorf("no sources: %q", got)
	}
	write(filepath.Join(d, "debian.sources"), "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"+
		"URIs: http://security.example/debian-security\nTypes: deb\nSuites: bookworm-security\n\n"+
		"Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\nComponents: main\n")
	if got := AptMirror(list, d); got != "http://deb.example/debian" {
		t.Errorf("deb822: %q", got)
	}
	write(list, "# deb http://commented/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
	if got := AptMirror(list, d); got != "http://one.example/debian" {
		t.Errorf("one-line format first: %q", got)
	}
}
