package deploy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// bootSubdir is cfs-deploy's directory in the boot directory. Every file
// in it is named after its content, so files are shared by deployments
// with the same kernel and never rewritten with something else.
const bootSubdir = "cfs-deploy"

type bootFile struct {
	abs     string // where it is
	rel     string // how an entry names it: from the boot directory's root
	created bool   // this rollout added it
}

type bootFiles struct {
	kernel, initramfs bootFile
	built             bool // the initramfs was built, not taken from the commit
	manifest          *initramfs.Manifest
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
// from the commit's modules with cfs-init as /init.
func installBootFiles(r *repo.Repo, c *repo.Commit, tfs fs.FS, opts Options, u *undo) (*bootFiles, error) {
	dir := filepath.Join(opts.BootDir, bootSubdir)
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
		if bf.initramfs, bf.manifest, err = buildInitramfs(tfs, opts, k.Version, dir, u); err != nil {
			return nil, err
		}
		logf(opts.Log, "initramfs %s: %d bytes, %d modules", bf.initramfs.abs, bf.manifest.Size, len(bf.manifest.Modules))
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

// buildInitramfs builds an initramfs from the modules of the tree and
// stores it under the first 16 hex digits of its SHA-256: the same commit
// and cfs-init give the same bytes, so repeated rollouts share one file.
func buildInitramfs(tfs fs.FS, opts Options, kver, dir string, u *undo) (bootFile, *initramfs.Manifest, error) {
	// Rollout found cfs-init (opts.Init) before writing anything.
	var buf bytes.Buffer
	m, err := initramfs.Build(&buf, initramfs.Options{
		Init: opts.Init, KernelVersion: kver, FS: tfs, Extra: opts.Modules, Compression: opts.Compression,
	})
	if err != nil {
		return bootFile{}, nil, fmt.Errorf("build initramfs: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	name := "initramfs-" + kver + "-" + hex.EncodeToString(sum[:])[:16] + ".img"
	dest := filepath.Join(dir, name)
	bf := bootFile{abs: dest, rel: "/" + bootSubdir + "/" + name}
	existed, same, err := sameContent(dest, func(f *os.File) (bool, error) {
		got, err := sha256File(f)
		return bytes.Equal(got, sum[:]), err
	})
	if err != nil || same {
		return bf, &m, err
	}
	if err := writeBootFile(dir, name, func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	}); err != nil {
		return bf, &m, err
	}
	if !existed {
		bf.created = true
		u.bootFile(dest)
	}
	return bf, &m, nil
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

func sha256File(f *os.File) ([]byte, error) {
	var h hash.Hash = sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
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
