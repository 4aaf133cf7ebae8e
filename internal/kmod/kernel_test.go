package kmod

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

// defaultSet is the initramfs builder's default module list.
var defaultSet = []string{
	"crc32c_generic", "crc32c-intel", "sha256-ssse3",
	"virtio_blk", "virtio_pci", "virtio_scsi", "ahci", "nvme", "sd_mod",
	"ext4", "xfs", "btrfs", "erofs", "overlay", "loop",
}

func TestReadModInfoDebian(t *testing.T) {
	tr := kmodtest.Kernel(t)
	mi, err := readModInfo(filepath.Join(tr.ModulesDir, "kernel/fs/ext4/ext4.ko.xz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"jbd2", "mbcache", "crc16"} {
		if !slices.Contains(mi.Depends, d) {
			t.Errorf("ext4 depends %v lacks %s", mi.Depends, d)
		}
	}
	if mi.Name != "ext4" || !slices.Contains(mi.SoftPre, "crypto-crc32c") || !slices.Contains(mi.Aliases, "fs-ext4") {
		t.Errorf("ext4: %+v", mi)
	}
	if !strings.HasPrefix(mi.Vermagic, tr.Version+" ") {
		t.Errorf("vermagic %q, kernel %s", mi.Vermagic, tr.Version)
	}
	mi, err = readModInfo(filepath.Join(tr.ModulesDir, "kernel/arch/x86/crypto/crc32c-intel.ko.xz"))
	if err != nil {
		t.Fatal(err)
	}
	if mi.Name != "crc32c_intel" || !slices.Contains(mi.Aliases, "crypto-crc32c") {
		t.Errorf("crc32c-intel: %+v", mi)
	}
	// Same answer as kmod's modinfo, where it is installed.
	if modinfo, err := exec.LookPath("modinfo"); err == nil {
		out, err := exec.Command(modinfo, "-F", "depends", filepath.Join(tr.ModulesDir, "kernel/fs/btrfs/btrfs.ko.xz")).Output()
		if err != nil {
			t.Fatal(err)
		}
		mi, err := readModInfo(filepath.Join(tr.ModulesDir, "kernel/fs/btrfs/btrfs.ko.xz"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(mi.Depends, ","), strings.TrimSpace(string(out)); got != want {
			t.Errorf("btrfs depends %q, modinfo says %q", got, want)
		}
	}
}

func checkDefaultOrder(t *testing.T, res Result) {
	t.Helper()
	pos := make(map[string]int)
	for i, m := range res.Modules {
		pos[m.Name] = i
	}
	before := func(a, b string) {
		t.Helper()
		pa, oka := pos[a]
		pb, okb := pos[b]
		if !oka || !okb || pa >= pb {
			t.Errorf("%s (%d, %v) must load before %s (%d, %v)", a, pa, oka, b, pb, okb)
		}
	}
	for _, m := range []string{"jbd2", "ext4", "libcrc32c", "btrfs"} {
		before("crc32c_generic", m)
		before("crc32c_intel", m)
	}
	before("jbd2", "ext4")
	before("mbcache", "ext4")
	before("crc16", "ext4")
	before("libcrc32c", "erofs")
	before("libcrc32c", "xfs")
	before("sha256_ssse3", "btrfs")
	before("scsi_mod", "sd_mod")
	before("nvme_core", "nvme")
	if !slices.Contains(res.Builtin, "virtio_pci") {
		t.Errorf("virtio_pci (built in) not reported: %v", res.Builtin)
	}
	if len(res.Missing) != 0 {
		t.Errorf("missing: %v", res.Missing)
	}
}

// TestResolveDebian resolves the default set on the package's tree (no
// modules.dep: everything from .modinfo), on a copy where depmod ran, and on
// a copy with only modules.dep; all three must give the same modules, and
// the same dependencies as depmod's modules.dep.
func TestResolveDebian(t *testing.T) {
	tr := kmodtest.Kernel(t)
	start := time.Now()
	fromInfo, err := resolveDir(tr.ModulesDir, defaultSet, ResolveOptions{IgnoreDepFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("from .modinfo: %d modules in %v: %v", len(fromInfo.Modules), time.Since(start).Round(time.Millisecond), names(fromInfo.Modules))
	t.Logf("notes: %v", fromInfo.Notes)
	checkDefaultOrder(t, fromInfo)

	depDir := kmodtest.Depmod(t, tr)
	start = time.Now()
	fromDep, err := resolveDir(depDir, defaultSet, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("from depmod's files: %v", time.Since(start).Round(time.Millisecond))
	if !reflect.DeepEqual(fromInfo.Modules, fromDep.Modules) {
		t.Errorf("modinfo and depmod disagree:\n%+v\n%+v", fromInfo.Modules, fromDep.Modules)
	}

	// The dependency sets are depmod's.
	depmodDeps := readDepFile(t, filepath.Join(depDir, "modules.dep"))
	for _, m := range fromInfo.Modules {
		want, ok := depmodDeps[m.Path]
		if !ok {
			t.Errorf("%s: %s not in depmod's modules.dep", m.Name, m.Path)
			continue
		}
		got := slices.Sorted(slices.Values(m.Deps))
		if !slices.Equal(got, want) {
			t.Errorf("%s: deps %v, depmod says %v", m.Name, got, want)
		}
	}

	// modules.dep alone (no modules.softdep, no modules.alias): softdeps
	// and aliases come from .modinfo again.
	_, onlyDep := kmodtest.PristineCopy(t, tr)
	data, err := os.ReadFile(filepath.Join(depDir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(onlyDep, "modules.dep"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mixed, err := resolveDir(onlyDep, defaultSet, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromInfo.Modules, mixed.Modules) {
		t.Errorf("modinfo and modules.dep-only disagree:\n%+v\n%+v", fromInfo.Modules, mixed.Modules)
	}

	// Asking for the accelerated crc32c alone still brings the generic
	// one: crc32c_intel fails with ENODEV without SSE4.2 (seen under QEMU
	// -cpu qemu64, where libcrc32c and erofs then failed with ENOENT).
	for _, dir := range []string{tr.ModulesDir, depDir} {
		res, err := resolveDir(dir, []string{"crc32c-intel", "sha256-ssse3", "ext4", "erofs"}, ResolveOptions{IgnoreDepFiles: dir == tr.ModulesDir})
		if err != nil {
			t.Fatal(err)
		}
		got := names(res.Modules)
		if want := []string{"crc32c_intel", "sha256_ssse3", "crc16", "crc32c_generic", "jbd2", "mbcache", "ext4", "libcrc32c", "erofs"}; !slices.Equal(got, want) {
			t.Errorf("in %s: %v, want %v", dir, got, want)
		}
	}

	// A lone ext4 gets crc32c_generic (not crc32c_intel, which fails
	// without SSE4.2) in front of jbd2, both ways.
	for _, dir := range []string{tr.ModulesDir, depDir} {
		res, err := resolveDir(dir, []string{"ext4"}, ResolveOptions{IgnoreDepFiles: dir == tr.ModulesDir})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := names(res.Modules), []string{"crc16", "crc32c_generic", "jbd2", "mbcache", "ext4"}; !slices.Equal(got, want) {
			t.Errorf("ext4 alone in %s: %v, want %v", dir, got, want)
		}
	}
}

// readDepFile returns modules.dep as path -> sorted dependency names.
func readDepFile(t *testing.T, p string) map[string][]string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := make(map[string][]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var names []string
		for _, d := range strings.Fields(deps) {
			names = append(names, load.ModuleName(d))
		}
		slices.Sort(names)
		m[mod] = names
	}
	return m
}

func BenchmarkResolveModinfo(b *testing.B) {
	tr := kmodtest.Kernel(b)
	for b.Loop() {
		if _, err := resolveDir(tr.ModulesDir, defaultSet, ResolveOptions{IgnoreDepFiles: true}); err != nil {
			b.Fatal(err)
		}
	}
}
