package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Errors the verbs return; the CLI turns them into advice.
var (
	// ErrOnlyOne: rollback needs a second deployment.
	ErrOnlyOne = errors.New("there is no rollback deployment")
	// ErrBooted: the running system's deployment cannot be removed.
	ErrBooted = errors.New("deployment is the booted one")
	// ErrLast: removing it would leave nothing to boot.
	ErrLast = errors.New("deployment is the only one")
	// ErrDamaged: the deployment's entry or state cannot be used.
	ErrDamaged = errors.New("deployment is damaged")
	// ErrBad: the boot loader gave up on the deployment (its boot
	// counter ran out), so making it the default would not boot it.
	ErrBad = errors.New("deployment is marked bad: its boot counter ran out")
	// ErrStaged: the verb does not apply to the staged deployment.
	ErrStaged = errors.New("deployment is staged, not finalized")
)

// Status lists the deployments in boot order.
func (h *Host) Status() (*Deployments, error) {
	return h.deployments()
}

// RolledBack says what Rollback did.
type RolledBack struct {
	Default *Deployment
	// Discarded is the staged deployment rollback threw away first.
	Discarded verity.Digest
}

// Rollback makes the rollback deployment (index 1) the default, and the
// former default the rollback. Its entry alone is rewritten, with a version
// above every other: one atomic rename changes what boots. A staged
// deployment is discarded first: it would otherwise replace the rollback
// at shutdown.
func (h *Host) Rollback() (*RolledBack, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if len(ds.List) < 2 {
		return nil, fmt.Errorf("%d deployment(s) in %s: %w", len(ds.List), h.Entries(), ErrOnlyOne)
	}
	d := ds.List[1]
	if d.Problem != "" {
		return nil, fmt.Errorf("rollback deployment %s: %s: %w", d.Entry.File, d.Problem, ErrDamaged)
	}
	if d.Bad() {
		return nil, fmt.Errorf("rollback deployment %s: %w", d.Entry.File, ErrBad)
	}
	rb := &RolledBack{Default: d}
	if rb.Discarded, err = h.discardStaged(ds); err != nil {
		return nil, err
	}
	if err := h.moveToFront(ds, d); err != nil {
		return nil, err
	}
	if err := checkpoint("rollback-entry"); err != nil {
		return nil, err
	}
	return rb, nil
}

// moveToFront rewrites d's entry with the highest version, so that it
// sorts first, and drops a loader.conf default that would override it.
func (h *Host) moveToFront(ds *Deployments, d *Deployment) error {
	u := &undo{}
	e := *d.Entry
	if _, err := h.writeEntry(&e, ds.frontVersion(), u); err != nil {
		return err
	}
	if _, err := h.dropLoaderDefault(u); err != nil {
		if uerr := u.run(h.Boot); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return err
	}
	return nil
}

// Removed says what removing a deployment took away.
type Removed struct {
	Image verity.Digest `json:"image"`
	Entry string        `json:"entry"`
	Files []string      `json:"boot_files"` // kernels and initramfs images no other entry uses
	State bool          `json:"state"`      // its state directory went too
}

// Undeploy removes the deployment at index: its entry first (the boot
// loader then no longer sees it), then its state directory and the boot
// files no other entry refers to. The booted deployment and the last one
// are refused.
func (h *Host) Undeploy(index int) (*Removed, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	d, err := ds.At(index)
	if err != nil {
		return nil, err
	}
	if d.Staged {
		img, err := h.discardStaged(ds)
		return &Removed{Image: img, Files: []string{}, State: true}, err
	}
	if d.Booted {
		return nil, fmt.Errorf("deployment %d (%s): %w", index, d.Image, ErrBooted)
	}
	if len(ds.List) == 1 {
		return nil, fmt.Errorf("deployment %d (%s): %w; removing it would leave nothing to boot", index, d.Entry.File, ErrLast)
	}
	return h.remove(ds, d)
}

// remove takes a deployment away. The caller holds the lock.
func (h *Host) remove(ds *Deployments, d *Deployment) (*Removed, error) {
	rm := &Removed{Entry: d.Entry.File, Files: []string{}}
	if d.Problem == "" {
		rm.Image = d.Image
	}
	if err := bootcfg.RemoveEntry(h.Entries(), d.Entry.ID); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := checkpoint("undeploy-entry"); err != nil {
		return rm, err
	}
	// The state directory goes unless another entry boots the same image
	// (one that was damaged, say); images have one entry each.
	if d.Problem == "" && !h.stateInUse(ds, d) {
		if err := h.discardState(d.Image); err != nil {
			return rm, err
		}
		rm.State = true
		if err := checkpoint("undeploy-state"); err != nil {
			return rm, err
		}
	}
	files, err := h.removeUnreferencedBootFiles(bootFilesOf(d.Entry))
	rm.Files = append(rm.Files, files...)
	if err != nil {
		return rm, err
	}
	h.logf("removed deployment %s (entry %s, %d boot files)", rm.Image, rm.Entry, len(rm.Files))
	return rm, nil
}

// stateInUse reports whether a deployment other than d uses d's state.
func (h *Host) stateInUse(ds *Deployments, d *Deployment) bool {
	for _, o := range ds.List {
		if o != d && o.Image == d.Image {
			return true
		}
	}
	if st, err := h.readStaged(); err == nil && st != nil && st.Image == d.Image {
		return true
	}
	return false
}

// bootFilesOf returns the absolute paths of an entry's kernel, initramfs
// images and device tree, relative to a boot directory.
func bootFilesOf(e *bootcfg.Entry) []string {
	var out []string
	for _, p := range append([]string{e.Linux, e.EFI, e.Devicetree}, e.Initrd...) {
		if p != "" {
			out = append(out, filepath.FromSlash(p))
		}
	}
	return out
}

// removeUnreferencedBootFiles removes those of the candidates (paths
// relative to the boot directory) that are cfs-deploy's and that no entry
// and no staged deployment refers to any more.
func (h *Host) removeUnreferencedBootFiles(candidates []string) ([]string, error) {
	refs := referencedBootFiles(h.Boot)
	for _, p := range h.stagedBootFiles() {
		refs[p] = true
	}
	ours := h.BootJoin(sysroot.BootFilesDir) + string(filepath.Separator)
	var removed []string
	var errs []error
	for _, rel := range candidates {
		p := h.BootJoin(rel)
		if refs[p] || len(p) <= len(ours) || p[:len(ours)] != ours {
			continue
		}
		if err := os.Remove(p); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		if err := atomicfile.SyncDir(h.BootJoin(sysroot.BootFilesDir)); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// SetPinned pins or unpins the deployment at index. A pinned deployment
// is never removed by retention.
func (h *Host) SetPinned(index int, pinned bool) (*Deployment, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	d, err := ds.At(index)
	if err != nil {
		return nil, err
	}
	if d.Problem != "" {
		return nil, fmt.Errorf("deployment %d: %s: %w", index, d.Problem, ErrDamaged)
	}
	if d.Staged {
		return nil, fmt.Errorf("deployment %d: %w; pin it once it is finalized", index, ErrStaged)
	}
	p := filepath.Join(h.Deployment(d.Image), sysroot.PinnedFile)
	if pinned {
		err = atomicfile.WriteFile(p, nil, 0o644)
	} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
		err = nil
	} else if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(p))
	}
	if err != nil {
		return nil, fmt.Errorf("pin deployment %d: %w", index, err)
	}
	d.Pinned = pinned
	return d, nil
}

// EditKargs changes the kernel arguments of the deployment at index by
// writing its entry anew (atomically, keeping its place and its boot
// counter), or the staged deployment's record. Index -1 means the staged
// deployment if there is one, else the default. The finished line must
// pass cfs-init's parser. With no edits it only returns the current line.
func (h *Host) EditKargs(index int, edits []KargsEdit) (*Deployment, bootcfg.Cmdline, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	if index < 0 {
		index = 0
		if ds.Staged != nil {
			index = ds.Staged.Index
		}
	}
	d, err := ds.At(index)
	if err != nil {
		return nil, nil, err
	}
	if d.Entry == nil {
		return nil, nil, fmt.Errorf("deployment %d: %s: %w", index, d.Problem, ErrDamaged)
	}
	cl := d.Entry.Cmdline()
	if len(edits) == 0 {
		return d, cl, nil
	}
	if d.Problem != "" {
		return nil, nil, fmt.Errorf("deployment %d: %s: %w", index, d.Problem, ErrDamaged)
	}
	next, err := applyKargs(cl, edits)
	if err != nil {
		return nil, nil, err
	}
	if err := checkCmdline(next); err != nil {
		return nil, nil, err
	}
	e := *d.Entry
	e.SetCmdline(next)
	if d.Staged {
		st, err := h.readStaged()
		if err != nil || st == nil {
			return nil, nil, fmt.Errorf("staged deployment: %v: %w", err, ErrDamaged)
		}
		st.Options = next.String()
		if err := h.writeStaged(st); err != nil {
			return nil, nil, err
		}
		d.Entry = &e
		return d, next, nil
	}
	if err := bootcfg.WriteEntry(h.Entries(), &e); err != nil {
		return nil, nil, err
	}
	d.Entry = &e
	return d, next, nil
}

// retain removes the deployments retention does not keep: everything but
// the default, the keepRollback deployments right after it (the rollback
// positions, whichever they are), the booted one and the pinned ones. The
// caller holds the lock.
func (h *Host) retain(keepRollback int) ([]Removed, error) {
	ds, err := h.deployments()
	if err != nil {
		return nil, err
	}
	var removed []Removed
	var errs []error
	for i, d := range ds.List {
		switch {
		case i <= keepRollback || d.Booted || d.Pinned:
			continue
		case d.Problem != "":
			// Not removed on a guess: its /etc may be all that is
			// left of it. status shows it; undeploy removes it.
			continue
		}
		rm, err := h.remove(ds, d)
		if rm != nil {
			removed = append(removed, *rm)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}
