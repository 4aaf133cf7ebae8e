// Package initramfs builds the initramfs image that boots a cfs-deploy host:
// cfs-init as /init, the kernel modules needed to reach the root file
// system (with their load order precomputed), and a few device nodes and
// mount points.
//
// The image is reproducible: the same inputs give the same bytes (names
// sorted, parents first, inode numbers in that order, mtime 0, owner 0:0,
// compression without timestamps). It is a newc cpio written by this
// package itself: the format is small, and owning the writer keeps every
// header field under control.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

// DefaultModules is the broad module set, used when Options.Modules and
// Options.Default are nil: disk controllers for common virtual and
// physical machines, the root file systems cfs-deploy supports, and
// what every set has (see LeanModules). It boots most machines, at the
// price of loading xfs and btrfs (and raid6_pq, xor, blake2b and xxhash,
// which benchmark themselves when loaded) on every boot. Modules that a
// kernel lacks are skipped; built-in ones are noted.
func DefaultModules() []string {
	return LeanModules(Root{})
}

// Root describes the root file system an image is for, as far as it is
// known; LeanModules picks the modules from it.
type Root struct {
	// FSType is the physical root's file system type ("ext4"); "": not
	// known.
	FSType string
	// Drivers are the modules of the root disk's drivers, nearest first
	// ("virtio_blk", "virtio_pci"); nil: not known. Names the kernel does
	// not have as modules (drivers that are always built in) are skipped
	// when the image is built.
	Drivers []string
}

// Parts of the default sets.
var (
	// earlyModules must be in place before their users: crc32c before
	// ext4/jbd2/libcrc32c (softdeps that nothing else would load in an
	// initramfs without modprobe) and the accelerated sha256, which
	// fs-verity only picks up if it is loaded before the first verity use.
	earlyModules = []string{"crc32c_generic", "crc32c-intel", "sha256-ssse3"}
	// diskModules drive the disks of common virtual and physical machines.
	diskModules = []string{"virtio_blk", "virtio_pci", "virtio_scsi", "ahci", "nvme", "sd_mod"}
	// rootFSModules are the root file systems cfs-deploy supports.
	rootFSModules = []string{"ext4", "xfs", "btrfs"}
	// composefsModules mount the image: EROFS, overlayfs on top, and
	// loop for kernels that cannot mount EROFS from a file (Build leaves
	// it out of a default set where the kernel's configuration says it
	// can; fs-verity is never a module).
	composefsModules = []string{"erofs", "overlay", "loop"}
)

// RootFSModule returns the module that mounts a root file system of type
// fsType, and whether cfs-init mounts that type as the physical root at
// all (ext2 and ext3 go through the ext4 driver, as cfs-init mounts them).
func RootFSModule(fsType string) (string, bool) {
	if fsType == "ext2" || fsType == "ext3" {
		fsType = "ext4"
	}
	for _, m := range rootFSModules {
		if m == fsType {
			return m, true
		}
	}
	return "", false
}

// DiskModules are the drivers of the common disk controllers, which the
// default set has when the root's disk is not known.
func DiskModules() []string { return append([]string(nil), diskModules...) }

// LeanModules returns the default module set for a root: the early
// crypto modules, the root disk's drivers, the root file system's module
// and composefs's (EROFS, overlayfs, loop). What r does not know is
// covered by the broad set's part for it: all of cfs-deploy's root file
// systems, or the drivers of the common disk controllers.
func LeanModules(r Root) []string {
	mods := append([]string(nil), earlyModules...)
	if r.Drivers != nil {
		mods = append(mods, r.Drivers...)
	} else {
		mods = append(mods, diskModules...)
	}
	if m, ok := RootFSModule(r.FSType); ok {
		mods = append(mods, m)
	} else if r.FSType == "" {
		mods = append(mods, rootFSModules...)
	} else {
		mods = append(mods, r.FSType)
	}
	return append(mods, composefsModules...)
}

// Options say what goes into the image.
type Options struct {
	// Init is the host path of the cfs-init binary, archived as /init.
	Init string
	// KernelVersion is the kernel release (uname -r) whose modules are
	// included. Empty: the only version found in ModulesTree.
	KernelVersion string
	// ModulesTree is a root directory holding the modules in
	// usr/lib/modules/<KernelVersion> or lib/modules/<KernelVersion>
	// ("/" for the running system, or an extracted kernel package). Empty:
	// an image without modules, for kernels that have everything built in.
	ModulesTree string
	// FS, if set, holds the modules tree instead of the host: its root
	// plays the part of ModulesTree (which must then be empty), so the
	// modules of a commit can be read from the repository without a
	// checkout. Files in FS are archived with the same bytes as the same
	// files on the host would be.
	FS fs.FS
	// Modules are the module names to include with everything they need,
	// replacing the default set. They, and the names in Extra, must exist
	// in the tree or be built in.
	Modules []string
	// Default is the default set, used when Modules is nil (nil:
	// DefaultModules). Its members may be absent from the tree: they are
	// skipped with a note. loop is left out when the tree's kernel
	// configuration (KernelConfigPaths) says EROFS mounts from a file.
	Default []string
	// Extra are more module names, added to Modules or to the defaults.
	Extra []string
	// ExtraFiles maps absolute paths in the image to host files (symlinks
	// followed), for example a static busybox for an emergency shell. They
	// keep their permission bits; parent directories are created.
	ExtraFiles map[string]string
	// Compression is "gzip" (the default), "zstd" or "none".
	Compression string
}

// Manifest describes a built image.
type Manifest struct {
	KernelVersion string
	ModuleDir     string // module directory in the image, "usr/lib/modules/<kver>"; "" without modules
	Compression   string
	Entries       []Entry       // every archive member, in archive order
	Modules       []kmod.Module // in load order
	LoadList      []string      // ModuleDir-relative paths in load order (the content of cfs-load.list)
	Builtin       []string      // requested modules that are built into the kernel
	Skipped       []string      // default modules the tree does not have
	Notes         []string
	ArchiveSize   int64 // uncompressed cpio size
	Size          int64 // bytes written
}

// Entry is one archive member.
type Entry struct {
	Path   string      // without leading '/'
	Mode   fs.FileMode // type and permission bits
	Size   int64       // data size (symlink: target length)
	Source string      // file it was copied from: a module's path in the modules tree (ModulesTree or FS), else a host path; "" when generated
	Target string      // symlink target
	Major  uint32      // device numbers of a device node
	Minor  uint32
}

// entry is an archive member being assembled.
type entry struct {
	name         string // clean, relative
	mode         uint32 // unix st_mode
	data         []byte // generated content or symlink target
	src          string // file copied, when not generated
	fsys         fs.FS  // if set, src is a path in it instead of on the host
	size         int64
	major, minor uint32
}

type image struct {
	entries map[string]*entry
}

func (im *image) add(e *entry) error {
	if old, dup := im.entries[e.name]; dup {
		switch {
		case old.mode&modeType == modeDir && e.mode&modeType == modeDir:
			return nil
		case e.mode&modeType == modeDir:
			return fmt.Errorf("/%s is already in the image and not a directory", e.name)
		}
		return fmt.Errorf("/%s is already in the image", e.name)
	}
	if dir := path.Dir(e.name); dir != "." {
		if err := im.add(&entry{name: dir, mode: modeDir | 0o755}); err != nil {
			return fmt.Errorf("parent of /%s: %w", e.name, err)
		}
	}
	im.entries[e.name] = e
	return nil
}

// Build writes a compressed initramfs image to w.
func Build(w io.Writer, opts Options) (Manifest, error) {
	m := Manifest{Compression: opts.Compression}
	if m.Compression == "" {
		m.Compression = "gzip"
	}
	if m.Compression != "gzip" && m.Compression != "zstd" && m.Compression != "none" {
		return m, fmt.Errorf("unknown compression %q (gzip, zstd or none)", opts.Compression)
	}
	if opts.Init == "" {
		return m, errors.New("no init binary")
	}
	im := &image{entries: make(map[string]*entry)}

	initEnt, err := regularFile(nil, opts.Init, "init")
	if err != nil {
		return m, err
	}
	initEnt.mode = modeReg | 0o755
	fixed := []*entry{
		initEnt,
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChr | 0o600, major: 5, minor: 1},
		{name: "dev/null", mode: modeChr | 0o666, major: 1, minor: 3},
		{name: "proc", mode: modeDir | 0o555},
		{name: "sys", mode: modeDir | 0o555},
		{name: "run", mode: modeDir | 0o755},
		{name: "sysroot", mode: modeDir | 0o755},
		{name: "usr/lib", mode: modeDir | 0o755},
		// Tools that look in /lib/modules (busybox modprobe) find them.
		{name: "lib", mode: modeLink | 0o777, data: []byte("usr/lib")},
	}
	for _, e := range fixed {
		if err := im.add(e); err != nil {
			return m, err
		}
	}

	// A host tree is read through os.DirFS, like a tree in opts.FS: one
	// code path, and the same bytes either way.
	fsys, tree := opts.FS, "the tree"
	if opts.ModulesTree != "" {
		if fsys != nil {
			return m, errors.New("give ModulesTree or FS, not both")
		}
		fsys, tree = os.DirFS(opts.ModulesTree), opts.ModulesTree
	}
	if err := addModules(im, &m, opts, fsys, tree); err != nil {
		return m, err
	}

	dests := make([]string, 0, len(opts.ExtraFiles))
	for d := range opts.ExtraFiles {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		name, err := imagePath(d)
		if err != nil {
			return m, err
		}
		if name == "lib" || strings.HasPrefix(name, "lib/") {
			return m, fmt.Errorf("extra file %s: /lib is a symlink to usr/lib in the image; use /usr/lib", d)
		}
		e, err := regularFile(nil, opts.ExtraFiles[d], name)
		if err != nil {
			return m, err
		}
		if err := im.add(e); err != nil {
			return m, fmt.Errorf("extra file %s: %w", d, err)
		}
	}

	return m, write(w, im, &m)
}

// imagePath turns an absolute image path into an archive name.
func imagePath(p string) (string, error) {
	if !path.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("image path %q must be absolute", p)
	}
	name := strings.TrimPrefix(path.Clean(p), "/")
	if name == "" {
		return "", fmt.Errorf("image path %q names the root", p)
	}
	return name, nil
}

// regularFile stats a regular file (following symlinks) for the archive:
// src is a path in fsys, or on the host when fsys is nil.
func regularFile(fsys fs.FS, src, name string) (*entry, error) {
	var fi fs.FileInfo
	var err error
	if fsys != nil {
		fi, err = fs.Stat(fsys, src)
	} else {
		fi, err = os.Stat(src)
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", src)
	}
	if fi.Size() > 1<<32-1 {
		return nil, fmt.Errorf("%s: too large for cpio", src)
	}
	return &entry{name: name, mode: modeReg | uint32(fi.Mode().Perm()), src: src, fsys: fsys, size: fi.Size()}, nil
}

// FindModuleDir locates usr/lib/modules/<kver> or lib/modules/<kver> in fsys
// (with kver empty, the only version there is); dir is a path in fsys, and
// tree names fsys in messages.
func FindModuleDir(fsys fs.FS, tree, kver string) (dir, version string, err error) {
	bases := []string{"usr/lib/modules", "lib/modules"}
	if kver == "" {
		seen := make(map[string]bool)
		var found []string
		for _, b := range bases {
			ents, _ := fs.ReadDir(fsys, b)
			for _, e := range ents {
				if _, err := fs.Stat(fsys, path.Join(b, e.Name(), "kernel")); err == nil && !seen[e.Name()] {
					seen[e.Name()] = true
					found = append(found, e.Name())
				}
			}
		}
		if len(found) != 1 {
			return "", "", fmt.Errorf("%s holds modules for %d kernel versions %v; say which", tree, len(found), found)
		}
		kver = found[0]
	}
	if kver == "." || kver == ".." || strings.ContainsAny(kver, "/\x00") {
		return "", "", fmt.Errorf("bad kernel version %q", kver)
	}
	for _, b := range bases {
		d := path.Join(b, kver)
		if fi, err := fs.Stat(fsys, d); err == nil && fi.IsDir() {
			return d, kver, nil
		}
	}
	return "", "", fmt.Errorf("no modules for kernel %s in %s (usr/lib/modules or lib/modules)", kver, tree)
}

// addModules adds the modules from fsys, the modules tree (nil: none);
// tree names it in messages.
func addModules(im *image, m *Manifest, opts Options, fsys fs.FS, tree string) error {
	if fsys == nil {
		if len(opts.Modules) > 0 || len(opts.Extra) > 0 {
			return errors.New("modules requested but no ModulesTree")
		}
		m.KernelVersion = opts.KernelVersion
		m.Notes = append(m.Notes, "no modules: no ModulesTree given")
		return nil
	}
	modDir, kver, err := FindModuleDir(fsys, tree, opts.KernelVersion)
	if err != nil {
		return err
	}
	m.KernelVersion = kver
	m.ModuleDir = "usr/lib/modules/" + kver

	want := opts.Modules
	var optional []string
	if want == nil {
		want = opts.Default
		if want == nil {
			want = DefaultModules()
		}
		var notes []string
		want, notes = trimForKernel(fsys, kver, want)
		m.Notes = append(m.Notes, notes...)
		optional = want
	}
	want = append(append([]string(nil), want...), opts.Extra...)
	res, err := kmod.ResolveFS(fsys, modDir, want, kmod.ResolveOptions{Optional: optional})
	var nm *kmod.NoModuleError
	if errors.As(err, &nm) {
		return fmt.Errorf("kernel %s has no module %s (not in %s, not built in)", kver, strings.Join(nm.Names, ", "), modDir)
	}
	if err != nil {
		return err
	}
	m.Modules, m.Builtin, m.Skipped = res.Modules, res.Builtin, res.Missing
	m.Notes = append(m.Notes, res.Notes...)
	for _, s := range res.Missing {
		m.Notes = append(m.Notes, fmt.Sprintf("module %s: not in %s, skipped", s, modDir))
	}
	for _, b := range res.Builtin {
		m.Notes = append(m.Notes, fmt.Sprintf("module %s: built into the kernel", b))
	}

	if err := im.add(&entry{name: m.ModuleDir, mode: modeDir | 0o755}); err != nil {
		return err
	}
	for _, mod := range res.Modules {
		e, err := regularFile(fsys, path.Join(modDir, mod.Path), m.ModuleDir+"/"+mod.Path)
		if err != nil {
			return err
		}
		e.mode = modeReg | 0o644
		if err := im.add(e); err != nil {
			return err
		}
		m.LoadList = append(m.LoadList, mod.Path)
	}
	var dep, list bytes.Buffer
	if err := kmod.WriteModulesDep(&dep, res.Modules); err != nil {
		return err
	}
	if err := kmod.WriteLoadList(&list, res.Modules); err != nil {
		return err
	}
	gen := map[string][]byte{"modules.dep": dep.Bytes(), load.ListFile: list.Bytes()}
	if b, err := fs.ReadFile(fsys, path.Join(modDir, "modules.builtin")); err == nil {
		gen["modules.builtin"] = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for name, data := range gen {
		if err := im.add(&entry{name: m.ModuleDir + "/" + name, mode: modeReg | 0o644, data: data, size: int64(len(data))}); err != nil {
			return err
		}
	}
	return nil
}

// write emits the archive: names sorted (so parents precede children),
// inode numbers 1, 2, ... in that order, everything owned by 0:0 with
// mtime 0.
func write(w io.Writer, im *image, m *Manifest) (err error) {
	names := make([]string, 0, len(im.entries))
	for n := range im.entries {
		names = append(names, n)
	}
	sort.Strings(names)

	cw := &countWriter{w: w}
	var out io.Writer
	var closer io.Closer
	switch m.Compression {
	case "gzip":
		z, _ := gzip.NewWriterLevel(cw, gzip.BestCompression) // header: no name, mtime 0
		out, closer = z, z
	case "zstd":
		z, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return err
		}
		out, closer = z, z
	default:
		out = cw
	}
	nw := &newcWriter{w: out}
	for i, n := range names {
		e := im.entries[n]
		nlink := uint32(1)
		if e.mode&modeType == modeDir {
			nlink = 2
		}
		if e.src == "" {
			e.size = int64(len(e.data))
		}
		h := header{Ino: uint32(i + 1), Mode: e.mode, NLink: nlink, Size: uint32(e.size),
			RdevMajor: e.major, RdevMinor: e.minor, Name: n}
		if err := nw.writeHeader(h); err != nil {
			return err
		}
		if e.src != "" {
			if err := copyHostFile(nw, e); err != nil {
				return err
			}
		} else if err := nw.writeData(bytes.NewReader(e.data), e.size); err != nil {
			return err
		}
		ent := Entry{Path: n, Mode: fileMode(e.mode), Size: e.size, Source: e.src, Major: e.major, Minor: e.minor}
		if e.mode&modeType == modeLink {
			ent.Target = string(e.data)
		}
		m.Entries = append(m.Entries, ent)
	}
	if err := nw.writeTrailer(); err != nil {
		return err
	}
	m.ArchiveSize = nw.n
	if closer != nil {
		if err := closer.Close(); err != nil {
			return err
		}
	}
	m.Size = cw.n
	return nil
}

func copyHostFile(nw *newcWriter, e *entry) error {
	var f fs.File
	var err error
	if e.fsys != nil {
		f, err = e.fsys.Open(e.src)
	} else {
		f, err = os.Open(e.src)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := nw.writeData(f, e.size); err != nil {
		return fmt.Errorf("%s: %w", e.src, err)
	}
	// A file that grew while being read would be cut silently.
	if fi, err := f.Stat(); err != nil || fi.Size() != e.size {
		return fmt.Errorf("%s changed while being archived", e.src)
	}
	return nil
}

func fileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	switch mode & modeType {
	case modeDir:
		m |= fs.ModeDir
	case modeLink:
		m |= fs.ModeSymlink
	case modeChr:
		m |= fs.ModeDevice | fs.ModeCharDevice
	}
	return m
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
