// Package deploy manages the deployments of a sysroot: it makes commits
// bootable (rollout), and rolls back, removes, pins, re-orders and edits
// them. A deployment is a boot entry that boots an image plus the image's
// state directory (its own /etc, merged from the previous deployment's
// local changes, and the stateroot's shared /var); the layout is
// internal/sysroot's.
//
// The boot order is written into the entries themselves: every entry
// cfs-deploy writes has sort-key "cfs-deploy" and a numeric version, and
// the deployment with the highest version is the default, so systemd-boot
// (and any loader that sorts by the Boot Loader Specification's rules)
// boots it without a "default" line in loader.conf, and boot counting can
// push a failing entry behind the previous one. Moving a deployment to the
// front rewrites its entry alone with a higher version: one atomic rename.
//
// Ordering is what keeps the boot loader safe: everything an entry refers
// to is written and synced before the entry appears, entries appear and
// change by rename, and removals take the entry away first. A failure
// removes what the verb created and never touches an existing
// deployment's /etc or the /var.
package deploy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/crashpoint"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/osprep"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// DefaultStateroot is the stateroot used when none is named.
const DefaultStateroot = sysroot.DefaultStateroot

// DefaultKeepRollback is how many deployments after the default retention
// keeps, besides the booted and the pinned ones.
const DefaultKeepRollback = 1

// Options describe one rollout.
type Options struct {
	// Repo is the open repository; its parent directory must be Sysroot,
	// because gc looks there for the deployments whose images it keeps.
	Repo *repo.Repo
	// Sysroot holds state/ (default: the repository's parent).
	Sysroot string
	// BootDir is the boot partition or /boot (default: what an earlier
	// rollout recorded, else <Sysroot>/boot). Paths in entries are
	// relative to it.
	BootDir string
	// Ref names the commit: a branch, a commit id or a prefix, with an
	// optional ~N.
	Ref string
	// Stateroot selects the /var (default: that of the deployment the
	// new one is merged from, else DefaultStateroot).
	Stateroot string
	// Root is the root= value; empty: that of the deployment the new one
	// is merged from, else UUID= of the file system holding Sysroot.
	Root string
	// Kargs are more kernel arguments, added to those the new deployment
	// inherits from the one it is merged from (or, for an image already
	// deployed, to its own).
	Kargs []string
	// Init is the cfs-init binary put into an initramfs built for a commit
	// that ships none; empty: FindInit.
	Init string
	// Modules are extra kernel modules for a built initramfs, added to
	// ModuleSet or to the default set.
	Modules []string
	// ModuleSet, if not nil, replaces the default module set of a built
	// initramfs: the modules of the sysroot's file system and disk
	// drivers (found from sysfs) plus composefs's, or a broader set
	// where those cannot be found (see initramfs.LeanModules).
	ModuleSet []string
	// Initramfs chooses the builder of an initramfs for a commit that
	// ships none: InitramfsCFSInit (the default), InitramfsDracut
	// (dracut in its hostonly mode, for the machine it runs on) or
	// InitramfsDracutGeneric (dracut --no-hostonly).
	Initramfs string
	// DracutModule is a directory holding the cfs-deploy dracut module
	// to use when dracut has none installed (empty: dracut's own).
	DracutModule string
	// Compression of a built initramfs (default gzip).
	Compression string
	// AllowInsecure lets a repository without fs-verity be rolled out:
	// its entry says composefs=?<digest>, and the booted root is not
	// protected by verity=require. Without it such a rollout is refused
	// (ErrInsecureRepository), so that losing fs-verity never silently weakens
	// a boot.
	AllowInsecure bool
	// KeepRollback is how many deployments after the new default
	// retention keeps besides the booted and pinned ones; the others are
	// removed after the rollout. nil: DefaultKeepRollback.
	KeepRollback *int
	// NoRetention keeps every deployment.
	NoRetention bool
	// Tries, if above 0, writes the entry with a boot counter
	// (NAME+Tries.conf): the boot loader tries it that many times, and
	// falls back to the next deployment unless a boot marks it good
	// (MarkGood) first.
	Tries int
	// Stage prepares the deployment (state, /var, boot files) without
	// an entry; Finalize, at the running system's shutdown, merges /etc
	// again and makes it the default. Needs the running system.
	Stage bool
	// RunDir and Cmdline override where the running system's records and
	// command line are read (tests).
	RunDir, Cmdline string
	// Log, if set, receives progress lines.
	Log io.Writer
	// CheckCommit, if set, vets the commit Ref resolves to before
	// anything is done (rollout's require-signature check).
	CheckCommit func(commit verity.Digest) error
}

// Result says what a rollout did.
type Result struct {
	Commit    verity.Digest `json:"commit"`
	Branch    string        `json:"branch,omitempty"`
	Image     verity.Digest `json:"image"`
	Stateroot string        `json:"stateroot"`
	StateDir  string        `json:"state_dir"`
	// StateCreated is false when the deployment existed and its /etc was
	// kept as it was.
	StateCreated bool `json:"state_created"`
	// MergedFrom is the image of the deployment whose local /etc changes
	// the new /etc carries; empty when there was none.
	MergedFrom verity.Digest `json:"merged_from,omitzero"`
	Merge      *MergeReport  `json:"etc_merge,omitempty"`
	VarDir     string        `json:"var_dir"`
	VarCreated bool          `json:"var_created"`
	Entry      string        `json:"entry"`
	Kernel     string        `json:"kernel"`
	Initramfs  string        `json:"initramfs"`
	// InitramfsBuilt is set when the commit had no initramfs and one was
	// built from its modules with cfs-init; InitramfsReused when an
	// identical one built earlier was found instead.
	InitramfsBuilt  bool   `json:"initramfs_built"`
	InitramfsReused bool   `json:"initramfs_reused"`
	Cmdline         string `json:"cmdline"`
	// NewBootFiles lists the files this rollout added to the boot
	// directory (the others were already there with the same content).
	NewBootFiles []string `json:"new_boot_files"`
	// Removed lists the deployments retention removed afterwards.
	Removed []Removed `json:"removed"`
	// Staged is set when the deployment was staged: it becomes the
	// default when Finalize runs.
	Staged bool `json:"staged"`
	// Discarded is the image of a staged deployment this rollout
	// replaced.
	Discarded verity.Digest `json:"discarded_staged,omitzero"`
	// Warnings are things the operator should know; the rollout worked.
	Warnings []string `json:"warnings,omitempty"`
}

// failpoint, if set by a test, is called at each step; an error it
// returns is treated as a failure of that step.
var failpoint func(step string) error

// checkpoint marks a step after which a crash or a failure must leave the
// sysroot booting the old or the new state: crash tests kill the process
// there (internal/crashpoint), unit tests inject an error (failpoint).
func checkpoint(step string) error {
	crashpoint.Here(step)
	if failpoint != nil {
		if err := failpoint(step); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
	}
	return nil
}

// Errors of Rollout that callers can act on.
var (
	// ErrInsecureRepository refuses to roll out from a repository
	// without fs-verity unless Options.AllowInsecure.
	ErrInsecureRepository = errors.New("no fs-verity: its deployments would boot without verity=require")
	// ErrNoRootDevice means the root device could not be found from the
	// sysroot and Options.Root does not name it.
	ErrNoRootDevice = errors.New("cannot tell the root device")
)

// Rollout makes the commit opts.Ref bootable and the boot default.
func Rollout(opts Options) (res *Result, err error) {
	if opts.Repo == nil {
		return nil, errors.New("no repository")
	}
	h, err := OpenHost(HostOptions{Sysroot: opts.Sysroot, Boot: opts.BootDir, Repo: opts.Repo})
	if err != nil {
		return nil, err
	}
	h.RunDir, h.Cmdline, h.Log = opts.RunDir, opts.Cmdline, opts.Log
	return h.Rollout(opts)
}

// Rollout makes the commit opts.Ref bootable and the boot default (the
// fields of opts that say where are ignored: the host says).
func (h *Host) Rollout(opts Options) (res *Result, err error) {
	r := h.Repo
	if r == nil {
		return nil, errors.New("rollout needs the repository")
	}
	if opts.Stateroot != "" {
		if err := sysroot.CheckStateroot(opts.Stateroot); err != nil {
			return nil, err
		}
	}
	switch opts.Initramfs {
	case "", InitramfsCFSInit, InitramfsDracut, InitramfsDracutGeneric:
	default:
		return nil, fmt.Errorf("initramfs builder %q: want %s, %s or %s", opts.Initramfs, InitramfsCFSInit, InitramfsDracut, InitramfsDracutGeneric)
	}
	if opts.Tries < 0 {
		return nil, fmt.Errorf("boot tries %d: want 0 (no counting) or more", opts.Tries)
	}
	extra, err := parseKargs(opts.Kargs)
	if err != nil {
		return nil, err
	}
	if !r.Secure && !opts.AllowInsecure {
		return nil, fmt.Errorf("repository %s (%s): %w", r.Path, r.Mode(), ErrInsecureRepository)
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
	img := c.Image
	// Only a warning: a tree laid out by hand, or a test OS, may be fine
	// without the preparation.
	var prepWarnings []string
	if p := osprep.Check(root, r); len(p) > 0 {
		prepWarnings = []string{fmt.Sprintf("commit %s does not look prepared as an OS (commit --prepare-os, docs/os-trees.md): %s",
			id, strings.Join(p, "; "))}
	}
	if err := checkBootable(r, img, root); err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	if c.Kernel == nil {
		return nil, fmt.Errorf("commit %s has no kernel (no /usr/lib/modules/<version>/vmlinuz in its tree)", id)
	}
	if err := checkKernelVersion(c.Kernel.Version); err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	// Find cfs-init before anything is written, when it will be needed.
	if c.Kernel.Initramfs.IsZero() && opts.Init == "" {
		if opts.Init, err = FindInit(); err != nil {
			return nil, fmt.Errorf("commit %s has no initramfs.img and one cannot be built: %w", id, err)
		}
	}

	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	h.removeStaleTemps()
	if opts.Stage && !ds.Running {
		return nil, fmt.Errorf("sysroot %s: %w", h.Path, ErrNotRunning)
	}
	// A new rollout supersedes a staged one, staged or not itself.
	discarded, err := h.discardStaged(ds)
	if err != nil {
		return nil, err
	}
	existing := ds.ByImage(img)
	merge := h.mergeDeployment(ds, opts.Stateroot)
	// The deployment whose entry the new one takes its kernel arguments
	// from: its own when the image is deployed already.
	base := merge
	if existing != nil {
		base = existing
	}
	stateroot := opts.Stateroot
	switch {
	case stateroot == "" && existing != nil:
		stateroot = existing.Stateroot
	case stateroot == "" && merge != nil:
		stateroot = merge.Stateroot
	case stateroot == "":
		stateroot = DefaultStateroot
	}
	if merge != nil && merge.Stateroot != stateroot {
		merge = nil // /etc changes never cross operating systems
	}
	cmdline, err := h.newCmdline(c, base, opts.Root, extra, !r.Secure)
	if err != nil {
		return nil, err
	}

	res = &Result{Commit: id, Image: img, Stateroot: stateroot, NewBootFiles: []string{}, Removed: []Removed{}, Discarded: discarded,
		Warnings: prepWarnings}
	if branchIs(r, opts.Ref, id) {
		res.Branch = opts.Ref
	}
	u := &undo{}
	defer func() {
		if err != nil {
			if uerr := u.run(h.Boot); uerr != nil {
				err = errors.Join(err, uerr)
			}
			res = nil
		}
	}()
	tfs := r.TreeFS(root)

	origin := sysroot.Origin{
		Commit: res.Commit, Branch: res.Branch, Stateroot: stateroot, Image: c.Image,
		Kernel: c.Kernel.Version, Version: c.Version, Subject: c.Subject,
		Created: time.Now().UTC().Truncate(time.Second),
	}
	if existing != nil {
		if existing.Stateroot != stateroot {
			return nil, fmt.Errorf("image %s is already deployed with stateroot %q; it cannot also use %q", img, existing.Stateroot, stateroot)
		}
		res.StateDir = h.Deployment(img)
	} else {
		if merge != nil {
			origin.MergedFrom = merge.Image
			res.MergedFrom = origin.MergedFrom
		}
		if res.StateDir, res.Merge, err = h.createDeployment(root, img, origin, merge, u); err != nil {
			return nil, err
		}
		res.StateCreated = true
	}
	// The image is named for composefs-rs's collector before anything
	// can boot it.
	if err := h.setDeployRef(img); err != nil {
		return nil, err
	}
	if err := checkpoint("state"); err != nil {
		return nil, err
	}
	if res.VarDir, res.VarCreated, err = h.ensureVar(root, stateroot, u); err != nil {
		return nil, err
	}
	h.logf("state %s (%s), var %s (%s)", res.StateDir, createdOrKept(res.StateCreated), res.VarDir, createdOrKept(res.VarCreated))
	if res.Merge != nil {
		h.logf("%s", res.Merge.String())
	}

	rootSpec, _ := cmdline.Get("root")
	bf, err := h.installBootFiles(c, root, tfs, opts, rootSpec, u)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, bf.warnings...)
	res.Kernel, res.Initramfs = bf.kernel.abs, bf.initramfs.abs
	res.InitramfsBuilt, res.InitramfsReused = bf.built, bf.reused
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
	if err := syncFS(h.Path); err != nil {
		return nil, err
	}
	if err := syncFS(h.Boot); err != nil {
		return nil, err
	}

	e := newEntry(c, id, tfs, bf, cmdline)
	if opts.Tries > 0 {
		e.Counter = &bootcfg.BootCounter{Left: opts.Tries}
	}
	res.Cmdline = cmdline.String()
	if opts.Stage {
		st := &sysroot.Staged{
			Image: img, Commit: id, Stateroot: stateroot, MergedFrom: res.MergedFrom,
			Created: time.Now().UTC().Truncate(time.Second), Title: e.Title, Linux: e.Linux,
			Initrd: e.Initrd, Options: res.Cmdline, Tries: opts.Tries,
			KeepRollback: opts.KeepRollback, NoRetention: opts.NoRetention,
		}
		if err := h.writeStaged(st); err != nil {
			return nil, err
		}
		res.Staged = true
		h.logf("staged %s: finalize makes it the default at shutdown", img)
		return res, nil
	}
	if res.Entry, err = h.writeEntry(e, ds.frontVersion(), u); err != nil {
		return nil, err
	}
	if err := checkpoint("entry"); err != nil {
		return nil, err
	}
	warnings, removed, err := h.afterNewDefault(u, opts.NoRetention, opts.KeepRollback)
	if err != nil {
		return nil, err
	}
	res.Warnings, res.Removed = append(res.Warnings, warnings...), removed
	return res, nil
}

// afterNewDefault finishes making a new entry the default: it drops a
// loader.conf default that would override the order, records the boot
// directory, forgets an earlier finalize failure, and applies retention.
// Only the first step can fail the verb (and undo it: a default line
// naming the old entry would keep it booting); the others are tidying up,
// whose failures are warnings.
func (h *Host) afterNewDefault(u *undo, noRetention bool, keepRollback *int) (warnings []string, removed []Removed, err error) {
	warn, err := h.dropLoaderDefault(u)
	if err != nil {
		return nil, nil, err
	}
	if warn != "" {
		warnings = append(warnings, warn)
	}
	if err := checkpoint("loader"); err != nil {
		return nil, nil, err
	}
	if err := h.recordBootDir(); err != nil {
		warnings = append(warnings, err.Error())
	}
	if err := os.Remove(h.Join(sysroot.FinalizeFailed)); err != nil && !errors.Is(err, os.ErrNotExist) {
		warnings = append(warnings, err.Error())
	}
	if noRetention {
		return warnings, []Removed{}, nil
	}
	keep := DefaultKeepRollback
	if keepRollback != nil {
		keep = *keepRollback
	}
	removed, err = h.retain(keep)
	if err != nil {
		warnings = append(warnings, fmt.Sprintf("retention: %v", err))
	}
	if removed == nil {
		removed = []Removed{}
	}
	return warnings, removed, nil
}

// mergeDeployment picks the deployment whose local /etc changes a new
// deployment carries: the booted one on the running system, else the
// default of the stateroot (the first in boot order). A deployment the boot
// loader gave up on (boot counter at 0) or with a damaged state is never
// the base.
func (h *Host) mergeDeployment(ds *Deployments, stateroot string) *Deployment {
	usable := func(d *Deployment) bool { return d != nil && d.Problem == "" && !d.Bad() }
	if b := ds.Booted; usable(b) && (stateroot == "" || b.Stateroot == stateroot) {
		return b
	}
	for _, d := range ds.List {
		if usable(d) && (stateroot == "" || d.Stateroot == stateroot) {
			return d
		}
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

func createdOrKept(created bool) string {
	if created {
		return "created"
	}
	return "kept"
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
