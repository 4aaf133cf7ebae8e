// Package deploy makes a commit bootable on a sysroot: it creates the
// deployment's state (its own /etc, the stateroot's shared /var), copies
// the kernel and an initramfs into the boot directory, writes a Boot
// Loader Specification entry carrying composefs=<image digest>, and makes
// that entry the default.
//
// On disk:
//
//	<sysroot>/state/lock                         flock held while a rollout runs
//	<sysroot>/state/deploy/<image digest>/etc    the deployment's /etc
//	<sysroot>/state/deploy/<image digest>/origin.json
//	<sysroot>/state/os/<stateroot>/var           /var shared by a stateroot
//	<boot>/cfs-deploy/vmlinuz-<kver>-<16 hex>    named by content
//	<boot>/cfs-deploy/initramfs-<kver>-<16 hex>.img
//	<boot>/loader/entries/cfs-deploy-<12 hex>.conf
//	<boot>/loader/loader.conf                    "default" names the newest
//
// Ordering is what keeps the boot loader safe: everything an entry refers
// to is written and synced before the entry appears, entries appear by
// rename, and loader.conf changes last. A failure removes what the rollout
// created and never touches an existing deployment's /etc or the /var.
package deploy

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// DefaultStateroot is the stateroot used when none is named.
const DefaultStateroot = "default"

// Options describe one rollout.
type Options struct {
	// Repo is the open repository; its parent directory must be Sysroot,
	// because gc looks there for the deployments whose images it keeps.
	Repo *repo.Repo
	// Sysroot holds state/ (default: the repository's parent).
	Sysroot string
	// BootDir is the boot partition or /boot (default <Sysroot>/boot).
	// Paths in entries are relative to it.
	BootDir string
	// Ref names the commit: a branch, a commit id or a prefix, with an
	// optional ~N.
	Ref string
	// Stateroot selects the /var (default DefaultStateroot).
	Stateroot string
	// Root is the root= value; empty: UUID= of the file system holding
	// Sysroot.
	Root string
	// Kargs are more kernel arguments, appended after the ones rollout
	// writes (root=, rw, composefs=).
	Kargs []string
	// Init is the cfs-init binary put into an initramfs built for a commit
	// that ships none; empty: FindInit.
	Init string
	// Modules are extra kernel modules for a built initramfs.
	Modules []string
	// Compression of a built initramfs (default gzip).
	Compression string
	// AllowInsecure lets a repository without fs-verity be rolled out:
	// its entry says composefs=?<digest>, and the booted root is not
	// protected by verity=require. Without it such a rollout is refused,
	// so that losing fs-verity never silently weakens a boot.
	AllowInsecure bool
	// Log, if set, receives progress lines.
	Log io.Writer
	// CheckCommit, if set, vets the commit Ref resolves to before
	// anything is done (rollout's require-signature check).
	CheckCommit func(commit verity.Digest) error
}

// Result says what a rollout did.
type Result struct {
	Commit    string `json:"commit"`
	Branch    string `json:"branch,omitempty"`
	Image     string `json:"image"`
	Stateroot string `json:"stateroot"`
	StateDir  string `json:"state_dir"`
	// StateCreated is false when the deployment existed and its /etc was
	// kept as it was.
	StateCreated bool   `json:"state_created"`
	VarDir       string `json:"var_dir"`
	VarCreated   bool   `json:"var_created"`
	Entry        string `json:"entry"`
	Kernel       string `json:"kernel"`
	Initramfs    string `json:"initramfs"`
	// InitramfsBuilt is set when the commit had no initramfs and one was
	// built from its modules with cfs-init.
	InitramfsBuilt bool   `json:"initramfs_built"`
	Cmdline        string `json:"cmdline"`
	// NewBootFiles lists the files this rollout added to the boot
	// directory (the others were already there with the same content).
	NewBootFiles []string `json:"new_boot_files"`
}

// failpoint, if set by a test, is called at each step; an error it
// returns is treated as a failure of that step.
var failpoint func(step string) error

func checkpoint(step string) error {
	if failpoint != nil {
		if err := failpoint(step); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
	}
	return nil
}

// Rollout makes the commit opts.Ref bootable and the boot default.
func Rollout(opts Options) (res *Result, err error) {
	if opts.Repo == nil {
		return nil, errors.New("no repository")
	}
	if err := fillDefaults(&opts); err != nil {
		return nil, err
	}
	kargs, err := parseKargs(opts.Kargs)
	if err != nil {
		return nil, err
	}
	r := opts.Repo
	if !r.Secure && !opts.AllowInsecure {
		return nil, fmt.Errorf("repository %s has no fs-verity (%s): its deployments would boot without verity=require; give --insecure to roll out anyway", r.Path, r.Mode())
	}
	id, err := r.Resolve(opts.Ref)
	if err != nil {
		return nil, err
	}
	if opts.CheckCommit != nil {
		if err := opts.CheckCommit(id); err != nil {
			return nil, err
		}
	}
	c, root, err := r.CommitTree(id)
	if err != nil {
		return nil, err
	}
	if err := checkBootable(r, c.ImageDigest(), root); err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	if c.Kernel == nil {
		return nil, fmt.Errorf("commit %s has no kernel (no /usr/lib/modules/<version>/vmlinuz in its tree)", id)
	}
	if err := checkKernelVersion(c.Kernel.Version); err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	// Find cfs-init before anything is written, when it will be needed.
	if c.Kernel.Initramfs == "" && opts.Init == "" {
		if opts.Init, err = FindInit(); err != nil {
			return nil, fmt.Errorf("commit %s has no initramfs.img and one cannot be built: %w", id, err)
		}
	}
	rootSpec := opts.Root
	if rootSpec == "" {
		if rootSpec, err = DetectRoot(opts.Sysroot); err != nil {
			return nil, fmt.Errorf("%w (give the root device with --root)", err)
		}
	}
	if _, err := bootcfg.ParseRoot(rootSpec); err != nil {
		return nil, fmt.Errorf("root=%s: %w", rootSpec, err)
	}

	unlock, err := lockState(opts.Sysroot)
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeStaleTemps(opts.Sysroot, opts.BootDir)

	res = &Result{Commit: id.String(), Image: c.Image, Stateroot: opts.Stateroot, NewBootFiles: []string{}}
	if branchIs(r, opts.Ref, id) {
		res.Branch = opts.Ref
	}
	u := &undo{}
	defer func() {
		if err != nil {
			if uerr := u.run(opts.BootDir); uerr != nil {
				err = errors.Join(err, uerr)
			}
			res = nil
		}
	}()
	tfs := r.TreeFS(root)
	img := c.ImageDigest()

	origin := Origin{
		Commit: res.Commit, Branch: res.Branch, Stateroot: opts.Stateroot, Image: c.Image,
		Kernel: c.Kernel.Version, Created: time.Now().UTC().Truncate(time.Second),
		Root: rootSpec, Kargs: opts.Kargs,
	}
	if res.StateDir, res.StateCreated, err = ensureDeployment(r, root, opts.Sysroot, img, origin, u); err != nil {
		return nil, err
	}
	if err := checkpoint("state"); err != nil {
		return nil, err
	}
	if res.VarDir, res.VarCreated, err = ensureVar(r, root, opts.Sysroot, opts.Stateroot, u); err != nil {
		return nil, err
	}
	logf(opts.Log, "state %s (%s), var %s (%s)", res.StateDir, createdOrKept(res.StateCreated), res.VarDir, createdOrKept(res.VarCreated))

	bf, err := installBootFiles(r, c, tfs, opts, u)
	if err != nil {
		return nil, err
	}
	res.Kernel, res.Initramfs, res.InitramfsBuilt = bf.kernel.abs, bf.initramfs.abs, bf.built
	for _, f := range []bootFile{bf.kernel, bf.initramfs} {
		if f.created {
			res.NewBootFiles = append(res.NewBootFiles, f.abs)
		}
	}
	if err := checkpoint("bootfiles"); err != nil {
		return nil, err
	}
	// Everything the entry will reach goes to disk before the entry
	// exists: the deployment's state and the boot files.
	if err := syncFS(opts.Sysroot); err != nil {
		return nil, err
	}
	if err := syncFS(opts.BootDir); err != nil {
		return nil, err
	}

	e, err := newEntry(c, id, tfs, bf, rootSpec, !r.Secure, kargs)
	if err != nil {
		return nil, err
	}
	res.Cmdline = e.Cmdline().String()
	if res.Entry, err = writeEntry(opts.BootDir, e, u); err != nil {
		return nil, err
	}
	if err := checkpoint("entry"); err != nil {
		return nil, err
	}
	if err := setDefault(opts.BootDir, e.ID, u); err != nil {
		return nil, err
	}
	if err := checkpoint("loader"); err != nil {
		return nil, err
	}
	return res, nil
}

func fillDefaults(o *Options) error {
	if o.Sysroot == "" {
		o.Sysroot = o.Repo.Sysroot()
	}
	if o.BootDir == "" {
		o.BootDir = filepath.Join(o.Sysroot, "boot")
	}
	if o.Stateroot == "" {
		o.Stateroot = DefaultStateroot
	}
	if err := checkStateroot(o.Stateroot); err != nil {
		return err
	}
	// cfs-init finds the repository as <root device>/composefs.
	if filepath.Base(filepath.Clean(o.Repo.Path)) != "composefs" {
		return fmt.Errorf("repository %s is not named composefs: cfs-init looks for <sysroot>/composefs and could not boot the entry", o.Repo.Path)
	}
	same, err := sameDir(o.Sysroot, o.Repo.Sysroot())
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("repository %s is not in sysroot %s: gc would not see the deployment and could delete its image", o.Repo.Path, o.Sysroot)
	}
	return nil
}

// branchIs reports whether name is a branch whose tip is id, i.e. the
// user asked for the branch rather than a commit.
func branchIs(r *repo.Repo, name string, id verity.Digest) bool {
	if repo.ValidBranchName(name) != nil {
		return false
	}
	tip, err := r.Branch(name)
	return err == nil && tip == id
}

func parseKargs(args []string) (bootcfg.Cmdline, error) {
	var c bootcfg.Cmdline
	for _, a := range args {
		p := bootcfg.ParseCmdline(a)
		if len(p) == 0 {
			return nil, fmt.Errorf("empty kernel argument %q", a)
		}
		for _, q := range p {
			switch q.Key {
			case bootcfg.KeyComposefs, bootcfg.KeyComposefsDigest:
				return nil, fmt.Errorf("kernel argument %q: rollout writes composefs= itself", a)
			case "root":
				return nil, fmt.Errorf("kernel argument %q: give the root device with --root", a)
			}
		}
		c = append(c, p...)
	}
	return c, nil
}

func createdOrKept(created bool) string {
	if created {
		return "created"
	}
	return "kept"
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// treeNode returns the entry at p in the tree, or nil if absent.
func treeNode(root *erofs.Node, p string) *erofs.Node {
	n, err := erofs.Resolve(root, p)
	if err != nil {
		return nil
	}
	return n
}

// checkBootable makes sure everything the booted system will open is in
// the repository: the image under images/ (cfs-init's only way to it) and
// every object the tree references. A rollout that passed this cannot make
// an entry that fails at boot for want of content.
func checkBootable(r *repo.Repo, img verity.Digest, root *erofs.Node) error {
	if !r.HasImage(img) {
		return fmt.Errorf("image %s is not indexed under %s", img, r.ImagePath(img))
	}
	return r.CheckObjects(root)
}
