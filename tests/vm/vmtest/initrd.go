package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// Initrd is an initramfs under construction. It is written as an
// uncompressed newc cpio archive (u-root's pkg/cpio), entries in the order
// they were first added, with every owner root and every time zero, so
// equal inputs give equal bytes.
//
// The product's initramfs builder (internal/initramfs) has its own writer
// and is tested against the kernel through this harness, not by it: a
// second, independent writer is the point here.
type Initrd struct {
	entries []cpioEntry
	seen    map[string]bool
}

type cpioEntry struct {
	name         string // without leading slash
	mode         uint32 // type and permission bits, as in stat(2)
	data         []byte
	major, minor uint32 // of a device node
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// NewInitrd returns an initramfs holding the directories /dev, /proc, /sys
// and /tmp and the node /dev/console, which the kernel opens for /init's
// standard streams before /init can mount devtmpfs.
func NewInitrd() *Initrd {
	r := &Initrd{seen: make(map[string]bool)}
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp"} {
		r.Dir(d)
	}
	r.CharDev("/dev/console", 5, 1, 0o600)
	return r
}

// Dir adds a directory and any missing parents.
func (r *Initrd) Dir(name string) {
	name = strings.Trim(path.Clean("/"+name), "/")
	if name == "" || r.seen[name] {
		return
	}
	r.Dir(path.Dir(name))
	r.add(cpioEntry{name: name, mode: modeDir | 0o755})
}

// File adds a regular file with the given permission bits.
func (r *Initrd) File(name string, perm os.FileMode, data []byte) {
	r.addWithParents(cpioEntry{name: name, mode: modeFile | uint32(perm.Perm()), data: data})
}

// CopyFile adds the host file src as name.
func (r *Initrd) CopyFile(name, src string, perm os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	r.File(name, perm, data)
	return nil
}

// Symlink adds a symbolic link.
func (r *Initrd) Symlink(name, target string) {
	r.addWithParents(cpioEntry{name: name, mode: modeLink | 0o777, data: []byte(target)})
}

// CharDev adds a character device node.
func (r *Initrd) CharDev(name string, major, minor uint32, perm os.FileMode) {
	r.addWithParents(cpioEntry{name: name, mode: modeChar | uint32(perm.Perm()), major: major, minor: minor})
}

func (r *Initrd) addWithParents(e cpioEntry) {
	e.name = strings.Trim(path.Clean("/"+e.name), "/")
	r.Dir(path.Dir(e.name))
	r.add(e)
}

// add appends e, or replaces the entry of the same name in place.
func (r *Initrd) add(e cpioEntry) {
	if r.seen[e.name] {
		for i := range r.entries {
			if r.entries[i].name == e.name {
				r.entries[i] = e
				return
			}
		}
	}
	r.seen[e.name] = true
	r.entries = append(r.entries, e)
}

// WriteTo writes the archive in newc format (see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst).
func (r *Initrd) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	rw := cpio.Newc.Writer(&buf)
	for i, e := range r.entries {
		nlink := uint64(1)
		if e.mode&0o170000 == modeDir {
			nlink = 2
		}
		rec := cpio.StaticRecord(e.data, cpio.Info{Name: e.name, Ino: uint64(i + 1), Mode: uint64(e.mode),
			NLink: nlink, Rmajor: uint64(e.major), Rminor: uint64(e.minor)})
		if err := rw.WriteRecord(rec); err != nil {
			return 0, err
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return 0, err
	}
	return buf.WriteTo(w)
}

// WriteFile writes the archive into the test's temporary directory and
// returns its path.
func (r *Initrd) WriteFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initrd.cpio")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// Modules adds the named kernel modules (names as lsmod prints them, e.g.
// "virtio_blk") and the modules they depend on according to modules.dep, at
// their usual place under /lib/modules/<version>/. It returns their paths in
// the initramfs in an order that loads: every module after its dependencies,
// otherwise in the order named. Soft dependencies (ext4 wants crc32c) are
// not in modules.dep; name them yourself, before the module that wants them.
func (r *Initrd) Modules(k *KernelTree, names ...string) ([]string, error) {
	deps, err := readModulesDep(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	var order []string
	done := make(map[string]bool)
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		if done[name] {
			return nil
		}
		m, ok := deps[name]
		if !ok {
			return fmt.Errorf("module %s not in %s/modules.dep (wanted by %v)", name, k.ModulesDir, chain)
		}
		// modules.dep lists dependencies so that loading them from the
		// end of the list backwards works.
		for i := len(m.deps) - 1; i >= 0; i-- {
			if err := visit(moduleName(m.deps[i]), append(chain[:len(chain):len(chain)], name)); err != nil {
				return err
			}
		}
		done[name] = true
		order = append(order, m.path)
		return nil
	}
	for _, n := range names {
		if err := visit(strings.ReplaceAll(n, "-", "_"), nil); err != nil {
			return nil, err
		}
	}
	var paths []string
	for _, rel := range order {
		dst := path.Join("/lib/modules", k.Version, rel)
		if err := r.CopyFile(dst, filepath.Join(k.ModulesDir, rel), 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, dst)
	}
	return paths, nil
}

type moduleDep struct {
	path string   // relative to the modules directory
	deps []string // likewise
}

func readModulesDep(dir string) (map[string]moduleDep, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mods := make(map[string]moduleDep)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		mods[moduleName(mod)] = moduleDep{path: mod, deps: strings.Fields(rest)}
	}
	return mods, sc.Err()
}

// moduleName turns kernel/fs/ext4/ext4.ko.xz into ext4; the kernel treats
// '-' and '_' in module names alike, and so do we.
func moduleName(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}
