package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/dracut"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// bootSubdir is cfs-deploy's directory in the boot directory. Every file
// in it is named after its content (kernels) or everything its content is
// made from (built initramfs images), so files are shared by deployments
// with the same kernel and never rewritten with something else.
const bootSubdir = sysroot.BootFilesDir

type bootFile struct {
	abs     string // where it is
	rel     string // how an entry names it: from the boot directory's root
	created bool   // this rollout added it
}

type bootFiles struct {
	kernel, initramfs bootFile
	built             bool // the initramfs was built, not taken from the commit
	reused            bool // built earlier from the same inputs, and reused
	manifest          *initramfs.Manifest
	warnings          []string // about the initramfs's module set
}

// checkKernelVersion refuses kernel versions that would not make a plain
// file name: the version comes from the tree and ends up in paths.
func checkKernelVersion(v string) error {
	if v == "" || v[0] == '.' || strings.ContainsAny(v, "/\x00 \t\n") || len(v) > 128 {
		return fmt.Errorf("kernel version %q cannot name a file", v)
	}
	return nil
}

// installBootFiles puts the commit's kernel and an initramfs into the boot
// directory: the commit's own initramfs.img if it has one, else one built
// from the commit's modules with cfs-init as /init, for the root=
// rootSpec.
func (h *Host) installBootFiles(c *repo.Commit, root *erofs.Node, tfs fs.FS, opts Options, rootSpec string, u *undo) (*bootFiles, error) {
	r := h.Repo
	dir := h.BootJoin(bootSubdir)
	if err := mkdirAll(dir, 0o755, u); err != nil {
		return nil, err
	}
	k := c.Kernel
	kd := k.Vmlinuz
	bf := &bootFiles{}
	var err error
	if bf.kernel, err = installObject(r, kd, dir, "vmlinuz-"+k.Version+"-"+kd.String()[:16], u); err != nil {
		return nil, err
	}
	if d := k.Initramfs; !d.IsZero() {
		if bf.initramfs, err = installObject(r, d, dir, "initramfs-"+k.Version+"-"+d.String()[:16]+".img", u); err != nil {
			return nil, err
		}
	} else {
		bf.built = true
		if opts.Initramfs == InitramfsDracut || opts.Initramfs == InitramfsDracutGeneric {
			if bf.initramfs, err = buildDracut(tfs, opts, k.Version, dir, u); err != nil {
				return nil, err
			}
			h.logf("initramfs %s: built with dracut", bf.initramfs.abs)
			return bf, nil
		}
		ms := moduleSet{replace: opts.ModuleSet, extra: opts.Modules, what: "the modules given"}
		if ms.replace == nil {
			ms.def, ms.what, bf.warnings = DefaultModules(h.Path, rootSpec)
		}
		if bf.initramfs, bf.manifest, bf.reused, err = buildInitramfs(root, tfs, opts, ms, k.Version, dir, u); err != nil {
			return nil, err
		}
		if bf.reused {
			h.logf("initramfs %s: reused (same kernel modules, module set, cfs-init and options)", bf.initramfs.abs)
		} else {
			h.logf("initramfs %s: %d bytes, %d modules for %s", bf.initramfs.abs, bf.manifest.Size, len(bf.manifest.Modules), ms.what)
		}
	}
	return bf, nil
}

// installObject copies an object to dir/name unless a file of that name
// already has its content.
func installObject(r *repo.Repo, d verity.Digest, dir, name string, u *undo) (bootFile, error) {
	dest := filepath.Join(dir, name)
	bf := bootFile{abs: dest, rel: "/" + bootSubdir + "/" + name}
	existed, same, err := sameContent(dest, func(f *os.File) (bool, error) {
		got, err := verity.DigestFile(f)
		return got == d, err
	})
	if err != nil || same {
		return bf, err
	}
	src, err := r.OpenObject(d)
	if err != nil {
		return bf, fmt.Errorf("%s: object %s: %w", name, d, err)
	}
	defer src.Close()
	h := verity.NewHasher()
	err = writeBootFile(dir, name, func(w io.Writer) error {
		if _, err := io.Copy(io.MultiWriter(w, h), src); err != nil {
			return fmt.Errorf("copy %s: %w", src.Name(), err)
		}
		// Whatever the repository's mode, a kernel that is not the
		// committed one must not become bootable.
		if got := h.Sum(); got != d {
			return &verity.MismatchError{Path: src.Name(), Want: d, Got: got}
		}
		return nil
	})
	if err != nil {
		return bf, err
	}
	if !existed {
		bf.created = true
		u.bootFile(dest)
	}
	return bf, nil
}

// moduleSet is what a built initramfs's modules are chosen from.
type moduleSet struct {
	replace []string // the set the operator gave; nil: def
	def     []string // the default set, when replace is nil
	extra   []string // added to either
	what    string   // what the set is for, for the log
}

// buildInitramfs builds an initramfs from the modules of the tree with
// cfs-init as /init. It is named after a hash of everything it is made
// from (the module tree's entries, the module set, cfs-init's bytes, the
// options), so
// that a rollout whose kernel and cfs-init did not change finds the image
// an earlier one built and skips the build; the builder is reproducible,
// so the same inputs give the same bytes.
func buildInitramfs(root *erofs.Node, tfs fs.FS, opts Options, ms moduleSet, kver, dir string, u *undo) (bootFile, *initramfs.Manifest, bool, error) {
	// Rollout found cfs-init (opts.Init) before writing anything.
	key, err := initramfsKey(root, kver, opts, ms)
	if err != nil {
		return bootFile{}, nil, false, err
	}
	name := "initramfs-" + kver + "-" + key[:16] + ".img"
	dest := filepath.Join(dir, name)
	bf := bootFile{abs: dest, rel: "/" + bootSubdir + "/" + name}
	if fi, err := os.Lstat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		return bf, nil, true, nil
	}
	var buf bytes.Buffer
	m, err := initramfs.Build(&buf, initramfs.Options{
		Init: opts.Init, KernelVersion: kver, FS: tfs, Compression: opts.Compression,
		Modules: ms.replace, Default: ms.def, Extra: ms.extra,
	})
	if err != nil {
		return bootFile{}, nil, false, fmt.Errorf("build initramfs: %w", err)
	}
	_, statErr := os.Lstat(dest)
	if err := writeBootFile(dir, name, func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	}); err != nil {
		return bf, &m, false, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		bf.created = true
		u.bootFile(dest)
	}
	return bf, &m, false, nil
}

// Initramfs builders (Options.Initramfs).
const (
	InitramfsCFSInit       = "cfs-init"
	InitramfsDracut        = "dracut"
	InitramfsDracutGeneric = "dracut-generic"
)

// dracutModules, if set by a test, is the exact set of dracut modules to
// build with (dracut's own choice otherwise), which makes the build
// several times faster.
var dracutModules []string

// buildDracut builds the initramfs with the host's dracut and the
// cfs-deploy dracut module, from the commit's kernel modules (extracted
// for --kmoddir). dracut's output is not reproducible, so the image is
// named after its content.
func buildDracut(tfs fs.FS, opts Options, kver, dir string, u *undo) (bootFile, error) {
	work, err := os.MkdirTemp("", "cfs-deploy-dracut-")
	if err != nil {
		return bootFile{}, err
	}
	defer os.RemoveAll(work)
	mods, err := dracut.ExtractModules(tfs, kver, filepath.Join(work, "root"))
	if err != nil {
		return bootFile{}, fmt.Errorf("dracut: %w", err)
	}
	out := filepath.Join(work, "initramfs.img")
	_, err = dracut.Build(context.Background(), out, dracut.Options{
		KernelVersion: kver, ModulesDir: mods, Init: opts.Init, HostOnly: opts.Initramfs == InitramfsDracut,
		Drivers: append(append([]string(nil), opts.ModuleSet...), opts.Modules...), ModuleSource: opts.DracutModule, Log: opts.Log, Modules: dracutModules,
	})
	if err != nil {
		return bootFile{}, err
	}
	f, err := os.Open(out)
	if err != nil {
		return bootFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return bootFile{}, err
	}
	name := "initramfs-" + kver + "-" + hex.EncodeToString(h.Sum(nil))[:16] + ".img"
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return bootFile{}, err
	}
	dest := filepath.Join(dir, name)
	bf := bootFile{abs: dest, rel: "/" + bootSubdir + "/" + name}
	_, statErr := os.Lstat(dest)
	if err := writeBootFile(dir, name, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	}); err != nil {
		return bf, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		bf.created = true
		u.bootFile(dest)
	}
	return bf, nil
}

// initramfsKey hashes what a built initramfs is made from: the modules
// and modules.* files of the tree's module directory (names, modes, sizes
// and content digests, from the image: nothing is read), the module set
// (the default one depends on the machine), cfs-init's bytes and the
// build options. The kernel image beside them is not part of it.
func initramfsKey(root *erofs.Node, kver string, opts Options, ms moduleSet) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "cfs-deploy initramfs 2\x00%s\x00%s\x00%t\x00%q\x00%q\x00%q\x00",
		kver, opts.Compression, ms.replace != nil, ms.replace, ms.def, ms.extra)
	init, err := os.Open(opts.Init)
	if err != nil {
		return "", fmt.Errorf("cfs-init: %w", err)
	}
	defer init.Close()
	if _, err := io.Copy(h, init); err != nil {
		return "", fmt.Errorf("read cfs-init %s: %w", opts.Init, err)
	}
	for _, base := range []string{"/usr/lib/modules/", "/lib/modules/"} {
		n, err := erofs.Resolve(root, base+kver)
		if err != nil || !n.IsDir() {
			continue
		}
		for _, c := range n.Children {
			// The kernel image and whatever else sits beside the module
			// directories is not put into the initramfs.
			if c.IsDir() || strings.HasPrefix(c.Name, "modules.") {
				hashTree(h, c, base+kver+"/"+c.Name)
			}
		}
		break
	}
	// The kernel's configuration decides whether loop is in a default set.
	for _, p := range initramfs.KernelConfigPaths(kver) {
		if n, err := erofs.Resolve(root, "/"+p); err == nil {
			hashTree(h, n, "/"+p)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashTree(h hash.Hash, n *erofs.Node, p string) {
	t := n.Target()
	fmt.Fprintf(h, "%s\x00%o\x00%d\x00%x\x00%s\x00", p, t.Mode, t.Size, t.Digest, t.Payload)
	if t.Content != nil {
		h.Write(t.Content)
	}
	for _, c := range t.Children {
		hashTree(h, c, p+"/"+c.Name)
	}
}

// sameContent reports whether dest exists and whether check accepts its
// content. Something that is not a regular file there is an error: it is
// not ours to replace.
func sameContent(dest string, check func(*os.File) (bool, error)) (existed, same bool, err error) {
	f, err := os.Open(dest)
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return true, false, fmt.Errorf("%s exists and is not a regular file", dest)
	}
	same, err = check(f)
	if err != nil {
		return true, false, fmt.Errorf("read %s: %w", dest, err)
	}
	return true, same, nil
}

// writeBootFile writes dir/name atomically (temporary file, fsync,
// rename, directory fsync), so the name never holds partial content. A
// file of that name with other content (damaged: names are content
// hashes) is replaced.
func writeBootFile(dir, name string, fill func(io.Writer) error) error {
	f, err := atomicfile.Create(filepath.Join(dir, name), 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fill(bw); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Commit()
}
