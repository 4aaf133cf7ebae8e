package initramfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// maxImageSize is a requirement: the default image must stay below it.
const maxImageSize = 5_000_000

// initBinary returns cfs-init, built static and stripped as an
// installation ships it, to put at /init.
func initBinary(t testing.TB) string {
	t.Helper()
	return gobuild.T(t, "./cmd/cfs-init")
}

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}

func build(t testing.TB, opts Options) ([]byte, Manifest) {
	t.Helper()
	var b bytes.Buffer
	m, err := Build(&b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(b.Len()) {
		t.Fatalf("manifest size %d, wrote %d", m.Size, b.Len())
	}
	return b.Bytes(), m
}

func writeFile(t testing.TB, p string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkArchive checks the properties every image has: sorted names with
// parents first, inode numbers 1..n, owner 0:0, mtime 0, link counts, and
// the fixed members.
func checkArchive(t *testing.T, files []File) map[string]File {
	t.Helper()
	byName := make(map[string]File)
	for i, f := range files {
		if i > 0 && files[i-1].Name >= f.Name {
			t.Errorf("%q after %q: not sorted", f.Name, files[i-1].Name)
		}
		if dir := filepath.Dir(f.Name); dir != "." {
			if p, ok := byName[dir]; !ok || p.Mode&modeType != modeDir {
				t.Errorf("%s: parent %s missing or after it", f.Name, dir)
			}
		}
		if f.Ino != uint32(i+1) || f.UID != 0 || f.GID != 0 || f.MTime != 0 {
			t.Errorf("%s: ino %d uid %d gid %d mtime %d", f.Name, f.Ino, f.UID, f.GID, f.MTime)
		}
		wantLinks := uint32(1)
		if f.Mode&modeType == modeDir {
			wantLinks = 2
		}
		if f.NLink != wantLinks {
			t.Errorf("%s: nlink %d", f.Name, f.NLink)
		}
		byName[f.Name] = f
	}
	want := map[string]uint32{
		"init": modeReg | 0o755, "dev": modeDir | 0o755, "dev/console": modeChr | 0o600,
		"dev/null": modeChr | 0o666, "proc": modeDir | 0o555, "sys": modeDir | 0o555,
		"run": modeDir | 0o755, "sysroot": modeDir | 0o755, "lib": modeLink | 0o777,
	}
	for name, mode := range want {
		if f, ok := byName[name]; !ok || f.Mode != mode {
			t.Errorf("%s: mode %o (present %v), want %o", name, f.Mode, ok, mode)
		}
	}
	if c := byName["dev/console"]; c.RdevMajor != 5 || c.RdevMinor != 1 {
		t.Errorf("dev/console is %d,%d", c.RdevMajor, c.RdevMinor)
	}
	if c := byName["dev/null"]; c.RdevMajor != 1 || c.RdevMinor != 3 {
		t.Errorf("dev/null is %d,%d", c.RdevMajor, c.RdevMinor)
	}
	if string(byName["lib"].Data) != "usr/lib" {
		t.Errorf("lib -> %q", byName["lib"].Data)
	}
	return byName
}

// gnuList runs GNU cpio -itv on an uncompressed archive, or returns nil when
// cpio is not installed.
func gnuList(t *testing.T, archive []byte) []string {
	t.Helper()
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Log("GNU cpio not installed: skipping the cross-check (Debian package cpio)")
		return nil
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -itv: %v", err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
}

func TestBuildWithoutModules(t *testing.T) {
	dir := t.TempDir()
	initPath := writeFile(t, filepath.Join(dir, "init"), []byte("#!/bin/sh\necho hi\n"), 0o600)
	sh := writeFile(t, filepath.Join(dir, "busybox"), bytes.Repeat([]byte("busybox"), 1000), 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(sh, link)
	opts := Options{
		Init:        initPath,
		ExtraFiles:  map[string]string{"/bin/busybox": sh, "/usr/share/x/y.txt": link, "/etc/motd": initPath},
		Compression: "none",
	}
	raw, m := build(t, opts)
	files, err := readArchive(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	byName := checkArchive(t, files)
	if int64(len(raw)) != m.ArchiveSize || len(m.Entries) != len(files) {
		t.Errorf("manifest: size %d entries %d; archive %d bytes %d files", m.ArchiveSize, len(m.Entries), len(raw), len(files))
	}
	if f := byName["bin/busybox"]; f.Mode != modeReg|0o755 || len(f.Data) != 7000 {
		t.Errorf("bin/busybox: mode %o size %d", f.Mode, len(f.Data))
	}
	if f := byName["usr/share/x/y.txt"]; f.Mode != modeReg|0o755 || len(f.Data) != 7000 {
		t.Errorf("symlinked extra file: mode %o size %d", f.Mode, len(f.Data))
	}
	if f := byName["etc/motd"]; f.Mode != modeReg|0o600 {
		t.Errorf("etc/motd: mode %o", f.Mode)
	}
	if f := byName["init"]; string(f.Data) != "#!/bin/sh\necho hi\n" {
		t.Errorf("init: %q", f.Data)
	}
	for _, d := range []string{"bin", "etc", "usr", "usr/share", "usr/share/x", "usr/lib"} {
		if byName[d].Mode != modeDir|0o755 {
			t.Errorf("%s: mode %o", d, byName[d].Mode)
		}
	}

	// GNU cpio reads the same members.
	if lines := gnuList(t, raw); lines != nil {
		if len(lines) != len(files) {
			t.Fatalf("cpio lists %d members, we wrote %d:\n%s", len(lines), len(files), strings.Join(lines, "\n"))
		}
		for i, l := range lines {
			f := files[i]
			fields := strings.Fields(l)
			if fields[len(fields)-1] != f.Name && !strings.HasSuffix(l, f.Name+" -> "+string(f.Data)) {
				t.Errorf("cpio line %q, want name %s", l, f.Name)
			}
			if want := fileMode(f.Mode).String(); !strings.HasPrefix(l, strings.Replace(strings.Replace(want, "Dc", "c", 1), "L", "l", 1)) {
				t.Errorf("cpio line %q, want mode %s", l, want)
			}
		}
		if !strings.Contains(strings.Join(lines, "\n"), "5,   1") {
			t.Errorf("cpio does not show dev/console as 5, 1:\n%s", strings.Join(lines, "\n"))
		}
	}

	// Each compression gives the same archive, reproducibly.
	for _, c := range []string{"gzip", "zstd", ""} {
		opts.Compression = c
		a, _ := build(t, opts)
		b, _ := build(t, opts)
		if !bytes.Equal(a, b) {
			t.Errorf("%q: two builds differ", c)
		}
		got, err := readArchive(bytes.NewReader(a))
		if err != nil {
			t.Fatalf("%q: %v", c, err)
		}
		if !slices.EqualFunc(got, files, func(x, y File) bool {
			return x.Name == y.Name && x.Mode == y.Mode && bytes.Equal(x.Data, y.Data)
		}) {
			t.Errorf("%q: different content", c)
		}
	}
	if a, _ := build(t, Options{Init: initPath}); a[0] != 0x1f || a[1] != 0x8b || a[4]|a[5]|a[6]|a[7] != 0 {
		t.Errorf("default compression: header % x, want gzip with mtime 0", a[:10])
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	initPath := writeFile(t, filepath.Join(dir, "init"), []byte("x"), 0o755)
	cases := map[string]Options{
		"no init":           {},
		"missing init":      {Init: filepath.Join(dir, "nope")},
		"dir init":          {Init: dir},
		"compression":       {Init: initPath, Compression: "lz4"},
		"twice":             {Init: initPath, ExtraFiles: map[string]string{"/init": initPath}},
		"over a dir":        {Init: initPath, ExtraFiles: map[string]string{"/dev": initPath}},
		"under a file":      {Init: initPath, ExtraFiles: map[string]string{"/dev/null/x": initPath}},
		"under lib":         {Init: initPath, ExtraFiles: map[string]string{"/lib/x.so": initPath}},
		"relative":          {Init: initPath, ExtraFiles: map[string]string{"bin/sh": initPath}},
		"root":              {Init: initPath, ExtraFiles: map[string]string{"/": initPath}},
		"modules, no tree":  {Init: initPath, Modules: []string{"ext4"}},
		"no such tree":      {Init: initPath, ModulesTree: filepath.Join(dir, "nope")},
		"bad kernel string": {Init: initPath, ModulesTree: dir, KernelVersion: "../x"},
	}
	for name, opts := range cases {
		_, err := Build(io.Discard, opts)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		// The caller says what it was building ("build initramfs: ..."):
		// no package names stacked in front of the reason.
		if msg := err.Error(); strings.HasPrefix(msg, "initramfs:") || strings.Contains(msg, "kmod:") {
			t.Errorf("%s: %q repeats a package name as a prefix", name, msg)
		}
	}
}

// debianOpts builds the default image from the Debian kernel.
func debianOpts(t testing.TB, tree string, tr *kmodtest.Tree) Options {
	return Options{Init: initBinary(t), ModulesTree: tree, KernelVersion: tr.Version}
}

func TestBuildDebian(t *testing.T) {
	tr := kmodtest.Kernel(t)
	// The tree as the package ships it (no modules.dep; the VM tests may
	// have run depmod in the cache, so use a pristine copy).
	pristine, _ := kmodtest.PristineCopy(t, tr)
	opts := debianOpts(t, pristine, tr)
	img, m := build(t, opts)
	img2, _ := build(t, opts)
	if !bytes.Equal(img, img2) {
		t.Fatal("two builds from the same inputs differ")
	}
	t.Logf("default image: %d bytes gzip (%d bytes cpio), %d modules, init %d bytes", len(img), m.ArchiveSize, len(m.Modules), m.Entries[slices.IndexFunc(m.Entries, func(e Entry) bool { return e.Path == "init" })].Size)
	t.Logf("notes: %v", m.Notes)
	if len(img) >= maxImageSize {
		t.Errorf("default image is %d bytes, must be < %d", len(img), maxImageSize)
	}
	if m.KernelVersion != tr.Version || m.ModuleDir != "usr/lib/modules/"+tr.Version || m.Compression != "gzip" {
		t.Errorf("manifest: %+v", m)
	}
	if !slices.Contains(m.Builtin, "virtio_pci") || len(m.Skipped) != 0 {
		t.Errorf("builtin %v skipped %v", m.Builtin, m.Skipped)
	}

	files, err := readArchive(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	byName := checkArchive(t, files)
	modDir := m.ModuleDir + "/"

	// The load list: in the archive, equal to the manifest, ext4 after
	// what it needs.
	list, err := load.ParseLoadList(bytes.NewReader(byName[modDir+load.ListFile].Data))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(list, m.LoadList) {
		t.Errorf("cfs-load.list %v, manifest %v", list, m.LoadList)
	}
	pos := make(map[string]int)
	for i, p := range list {
		pos[load.ModuleName(p)] = i
		f, ok := byName[modDir+p]
		if !ok {
			t.Errorf("%s in the load list but not in the archive", p)
			continue
		}
		host, err := os.ReadFile(filepath.Join(tr.ModulesDir, p))
		if err != nil || !bytes.Equal(host, f.Data) || f.Mode != modeReg|0o644 {
			t.Errorf("%s: differs from the tree's file (mode %o, %v)", p, f.Mode, err)
		}
	}
	for _, dep := range []string{"crc32c_generic", "jbd2", "mbcache", "crc16"} {
		if pos[dep] >= pos["ext4"] {
			t.Errorf("%s (%d) not before ext4 (%d): %v", dep, pos[dep], pos["ext4"], list)
		}
	}
	for _, user := range []string{"jbd2", "libcrc32c"} {
		if pos["crc32c_generic"] >= pos[user] {
			t.Errorf("crc32c_generic not before %s: %v", user, list)
		}
	}
	if pos["sha256_ssse3"] >= pos["btrfs"] || pos["libcrc32c"] >= pos["erofs"] {
		t.Errorf("order: %v", list)
	}

	// modules.dep: one line per module file, dependencies that are files.
	var depPaths []string
	for _, line := range strings.Split(strings.TrimSpace(string(byName[modDir+"modules.dep"].Data)), "\n") {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("modules.dep line %q", line)
		}
		depPaths = append(depPaths, mod)
		for _, d := range strings.Fields(deps) {
			if _, ok := byName[modDir+d]; !ok {
				t.Errorf("modules.dep: %s needs %s, not in the archive", mod, d)
			}
			if pos[load.ModuleName(d)] >= pos[load.ModuleName(mod)] {
				t.Errorf("modules.dep: %s needs %s, which loads later", mod, d)
			}
		}
	}
	if line := string(byName[modDir+"modules.dep"].Data); !strings.Contains(line, "kernel/fs/ext4/ext4.ko.xz: ") {
		t.Errorf("modules.dep has no ext4 line:\n%s", line)
	}
	var moduleFiles []string
	for _, f := range files {
		if _, ok := load.TrimModuleExt(f.Name); ok {
			moduleFiles = append(moduleFiles, strings.TrimPrefix(f.Name, modDir))
		}
	}
	sort.Strings(depPaths)
	if !slices.Equal(depPaths, moduleFiles) {
		t.Errorf("modules.dep lines %v, module files %v", depPaths, moduleFiles)
	}
	if b, _ := os.ReadFile(filepath.Join(tr.ModulesDir, "modules.builtin")); !bytes.Equal(b, byName[modDir+"modules.builtin"].Data) {
		t.Error("modules.builtin not copied")
	}

	// GNU cpio agrees on the member list.
	var raw bytes.Buffer
	if _, err := Build(&raw, Options{Init: opts.Init, ModulesTree: pristine, KernelVersion: tr.Version, Compression: "none"}); err != nil {
		t.Fatal(err)
	}
	if lines := gnuList(t, raw.Bytes()); lines != nil {
		if len(lines) != len(files) {
			t.Errorf("cpio lists %d members, we wrote %d", len(lines), len(files))
		}
		for i := range min(len(lines), len(files)) {
			if !strings.Contains(lines[i], " "+files[i].Name) {
				t.Errorf("cpio line %q, want %s", lines[i], files[i].Name)
			}
		}
	}

	// With depmod's files in the tree, the image is the same, byte for byte.
	depTree := filepath.Dir(filepath.Dir(filepath.Dir(kmodtest.Depmod(t, tr))))
	if img3, _ := build(t, debianOpts(t, depTree, tr)); !bytes.Equal(img, img3) {
		t.Error("image from a tree with modules.dep differs from the one computed from .modinfo")
	}

	// An explicitly requested module must exist; a default one may not.
	if _, err := Build(io.Discard, Options{Init: opts.Init, ModulesTree: pristine, Extra: []string{"no_such_mod"}}); err == nil {
		t.Error("missing explicit module: no error")
	}
	_, m2 := build(t, Options{Init: opts.Init, ModulesTree: pristine, Modules: []string{"ext4"}, Compression: "zstd"})
	if got := m2.LoadList; len(got) != 5 || got[4] != "kernel/fs/ext4/ext4.ko.xz" {
		t.Errorf("ext4 alone: %v", got)
	}
}

// BenchmarkBuild builds the default image from the Debian kernel tree as
// the package ships it, without depmod's files (the slow case: the .modinfo
// of every module involved is decompressed and read), and from a tree where
// depmod ran.
func BenchmarkBuild(b *testing.B) {
	tr := kmodtest.Kernel(b)
	pristine, _ := kmodtest.PristineCopy(b, tr)
	depTree := filepath.Dir(filepath.Dir(filepath.Dir(kmodtest.Depmod(b, tr))))
	for _, c := range []struct{ name, tree, compression string }{
		{"gzip", pristine, "gzip"},
		{"zstd", pristine, "zstd"},
		{"gzip-with-modules.dep", depTree, "gzip"},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := debianOpts(b, c.tree, tr)
			opts.Compression = c.compression
			var size int64
			cpu0 := cpuTime()
			for b.Loop() {
				m, err := Build(io.Discard, opts)
				if err != nil {
					b.Fatal(err)
				}
				size = m.Size
			}
			b.ReportMetric(float64(size), "bytes")
			// CPU time tells more than wall time on a busy machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// cpuTime returns the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
