package load

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestMain makes sure no test ever reaches the real finit_module(2): the
// modules of other kernels must never be loaded into the host's.
func TestMain(m *testing.M) {
	finitModule = func(fd int, params string, flags int) error {
		panic("test called the real finit_module")
	}
	os.Exit(m.Run())
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/nvme/host/nvme-core.ko.xz": "nvme_core",
		"kernel/fs/ext4/ext4.ko":                   "ext4",
		"crc32c-intel.ko.zst":                      "crc32c_intel",
		"x.ko.gz":                                  "x",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
	if _, ok := TrimModuleExt("modules.dep"); ok {
		t.Error("modules.dep taken for a module")
	}
}

func TestParseLoadList(t *testing.T) {
	good := "# generated\nkernel/crypto/crc32c_generic.ko.xz\n\n  kernel/fs/ext4/ext4.ko.xz  \nupdates/x.ko\nkernel/a.ko.zst\nkernel/b.ko.gz\n"
	list, err := ParseLoadList(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/crypto/crc32c_generic.ko.xz", "kernel/fs/ext4/ext4.ko.xz", "updates/x.ko", "kernel/a.ko.zst", "kernel/b.ko.gz"}
	if !slices.Equal(list, want) {
		t.Fatalf("got %q", list)
	}
	for _, bad := range []string{
		"/lib/modules/x/kernel/a.ko", "../a.ko", "kernel/../../a.ko", "kernel//a.ko",
		"kernel/a.txt", "kernel/a b.ko", "kernel/a.ko.bz2", ".", "a.ko\x00",
	} {
		if _, err := ParseLoadList(strings.NewReader("kernel/ok.ko\n" + bad + "\n")); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: error %v does not name the line", bad, err)
		}
	}
	if _, err := ParseLoadList(strings.NewReader(strings.Repeat("kernel/a.ko\n", MaxListSize/10))); err == nil {
		t.Error("oversized list accepted")
	}

	p := filepath.Join(t.TempDir(), ListFile)
	os.WriteFile(p, []byte(good), 0o644)
	if list, err := ReadLoadList(p); err != nil || len(list) != 5 {
		t.Errorf("ReadLoadList: %v %v", list, err)
	}
	if _, err := ReadLoadList(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		want Outcome
	}{
		{nil, Loaded},
		{syscall.EEXIST, AlreadyLoaded},
		{fmt.Errorf("wrapped: %w", syscall.EEXIST), AlreadyLoaded},
		{syscall.ENODEV, NotApplicable},
		{syscall.ENOENT, Failed},
		{syscall.ENOEXEC, Failed},
		{syscall.EPERM, Failed},
		{errors.New("other"), Failed},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	for _, e := range []syscall.Errno{syscall.ENOENT, syscall.ENOEXEC, syscall.EKEYREJECTED, syscall.EPERM, syscall.EOPNOTSUPP, syscall.EINVAL} {
		if Hint(e) == "" {
			t.Errorf("no hint for %v", e)
		}
	}
	if Hint(errors.New("x")) != "" || Hint(syscall.EXDEV) != "" {
		t.Error("hint for an unexpected error")
	}
	msg := (&Error{Module: "erofs", Path: "kernel/fs/erofs/erofs.ko.xz", Op: "finit_module", Err: syscall.ENOENT}).Error()
	for _, s := range []string{"erofs", "kernel/fs/erofs/erofs.ko.xz", "finit_module", "ENOENT", "no such file", "dependency"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q lacks %q", msg, s)
		}
	}
}

type call struct {
	name   string
	params string
	flags  int
}

// TestLoadFake runs Load against a stand-in for finit_module(2).
func TestLoadFake(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"kernel/a.ko":       []byte("\x7fELF\x02\x01\x01rest"),
		"kernel/b-x.ko.xz":  []byte("\xfd7zXZ\x00rest"),
		"kernel/c.ko.zst":   []byte("\x28\xb5\x2f\xfdrest"),
		"kernel/f.ko":       []byte("\x7fELF"),
		"kernel/g.ko.xz":    []byte("\xfd7zXZ\x00"),
		"kernel/h.ko.xz":    []byte("\xfd7zXZ\x00"),
		"kernel/tiny.ko.gz": []byte("\x1f"),
		"modules.builtin":   []byte("kernel/drivers/virtio/d-bi.ko\n"),
	}
	for p, data := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var calls []call
	saved := finitModule
	defer func() { finitModule = saved }()
	finitModule = func(fd int, params string, flags int) error {
		// Identify the file by its inode.
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			t.Fatalf("fstat: %v", err)
		}
		name := "?"
		for p := range files {
			var s2 syscall.Stat_t
			if syscall.Stat(filepath.Join(dir, p), &s2) == nil && s2.Ino == st.Ino {
				name = ModuleName(p)
			}
		}
		calls = append(calls, call{name, params, flags})
		switch name {
		case "f":
			return syscall.EEXIST
		case "g":
			return syscall.ENODEV
		case "h":
			return syscall.ENOENT
		}
		return nil
	}
	list := []string{"kernel/a.ko", "kernel/b-x.ko.xz", "kernel/c.ko.zst", "kernel/drivers/virtio/d-bi.ko",
		"kernel/e.ko.xz", "kernel/f.ko", "kernel/g.ko.xz", "kernel/h.ko.xz", "kernel/tiny.ko.gz"}
	var logs []string
	err := Load(dir, list, Options{
		Logf:   func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) },
		Params: func(m string) string { return map[string]string{"b_x": "opt=1"}[m] },
	})
	want := []call{
		{"a", "", 0}, {"b_x", "opt=1", compressedFlag}, {"c", "", compressedFlag},
		{"f", "", 0}, {"g", "", compressedFlag}, {"h", "", compressedFlag}, {"tiny", "", compressedFlag},
	}
	if !slices.Equal(calls, want) {
		t.Errorf("calls %v\nwant  %v", calls, want)
	}
	t.Logf("log:\n%s", strings.Join(logs, "\n"))
	t.Logf("error: %v", err)
	var errs []*Error
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var le *Error
		if !errors.As(e, &le) {
			t.Fatalf("error %v is not an *Error", e)
		}
		errs = append(errs, le)
	}
	if len(errs) != 2 || errs[0].Module != "e" || errs[0].Op != "open" || !errors.Is(errs[0], syscall.ENOENT) ||
		errs[1].Module != "h" || errs[1].Op != "finit_module" || !errors.Is(errs[1], syscall.ENOENT) {
		t.Errorf("errors: %+v", errs)
	}
	joined := strings.Join(logs, "\n")
	for _, s := range []string{"d_bi: built in", "f: already loaded", "g: not applicable", "a: loaded", "module e (kernel/e.ko.xz): open: ENOENT"} {
		if !strings.Contains(joined, s) {
			t.Errorf("log lacks %q", s)
		}
	}

	calls = nil
	if err := Load(dir, []string{"kernel/a.ko"}, Options{}); err != nil || len(calls) != 1 {
		t.Errorf("LoadAll: %v %v", err, calls)
	}
}

// TestImports keeps the loader light: cfs-init links it, and must not pull
// in decompressors or anything but the standard library and x/sys.
func TestImports(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/cfs-deploy/cfs-deploy/internal/kmod/load" && !strings.HasPrefix(p, "golang.org/x/sys/") {
			t.Errorf("the loader imports %s", p)
		}
	}
}
