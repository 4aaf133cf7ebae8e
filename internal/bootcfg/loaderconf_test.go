package bootcfg

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoaderConf(t *testing.T) {
	in := "# loader.conf\r\ntimeout 3\nconsole-mode max\ndefault old-*\n\ndefault older\neditor no\ntimeout\n"
	lc, err := ParseLoaderConf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	// The later default line wins, as in systemd-boot.
	if lc.Default != "older" || lc.Timeout != "3" {
		t.Errorf("Default %q Timeout %q", lc.Default, lc.Timeout)
	}
	lc.Default = "cfs-new.conf"
	// The first default/timeout line is rewritten in place, later
	// duplicates go, everything else stays.
	want := "# loader.conf\ntimeout 3\nconsole-mode max\ndefault cfs-new.conf\n\neditor no\ntimeout\n"
	if got := string(lc.Marshal()); got != want {
		t.Errorf("Marshal =\n%q\nwant\n%q", got, want)
	}
	lc.Timeout = ""
	want = "# loader.conf\nconsole-mode max\ndefault cfs-new.conf\n\neditor no\ntimeout\n"
	if got := string(lc.Marshal()); got != want {
		t.Errorf("without timeout =\n%q\nwant\n%q", got, want)
	}
}

func TestLoaderConfAppends(t *testing.T) {
	lc, err := ParseLoaderConf(strings.NewReader("editor no"))
	if err != nil {
		t.Fatal(err)
	}
	lc.Default, lc.Timeout = "cfs-*", "menu-hidden"
	if got, want := string(lc.Marshal()), "editor no\ndefault cfs-*\ntimeout menu-hidden\n"; got != want {
		t.Errorf("Marshal = %q, want %q", got, want)
	}
	var empty LoaderConf
	if got := string(empty.Marshal()); got != "" {
		t.Errorf("empty Marshal = %q", got)
	}
}

func TestReadWriteLoaderConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loader.conf")
	lc, err := ReadLoaderConf(path)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if lc.Default != "" || lc.Timeout != "" || lc.Lines != nil {
		t.Errorf("missing file gave %+v", lc)
	}
	lc.Default, lc.Timeout = "cfs-a.conf", "5"
	if err := WriteLoaderConf(path, lc); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"loader.conf"}) {
		t.Errorf("directory holds %q", got)
	}
	back, err := ReadLoaderConf(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Default != "cfs-a.conf" || back.Timeout != "5" {
		t.Errorf("read back %+v", back)
	}
	// Others' lines survive a rewrite.
	if err := os.WriteFile(path, []byte("beep yes\ndefault x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lc, err = ReadLoaderConf(path)
	if err != nil {
		t.Fatal(err)
	}
	lc.Default = "y"
	if err := WriteLoaderConf(path, lc); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "beep yes\ndefault y\n" {
		t.Errorf("file holds %q", data)
	}
}

func TestWriteLoaderConfErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loader.conf")
	for _, lc := range []*LoaderConf{
		{Default: "a\nb"},
		{Timeout: " 3"},
		{Lines: []string{"x\ny"}},
	} {
		if err := WriteLoaderConf(path, lc); err == nil {
			t.Errorf("WriteLoaderConf(%+v) succeeded", lc)
		}
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("left behind %q", got)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLoaderConf(filepath.Join(file, "loader.conf"), &LoaderConf{Default: "x"}); err == nil {
		t.Errorf("write under a file succeeded")
	}
	if _, err := ParseLoaderConf(strings.NewReader("default \x00\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("NUL: %v", err)
	}
}
