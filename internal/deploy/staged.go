package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// ErrNotRunning is returned by the verbs that only make sense on the
// running system (staging, finalize, mark-good) for an offline sysroot.
var ErrNotRunning = errors.New("not the running system's sysroot (no cfs-init boot record names it)")

// readStaged reads the staged deployment's record; nil when none.
func (h *Host) readStaged() (*sysroot.Staged, error) {
	return sysroot.ReadStaged(h.runPath(sysroot.StagedFile))
}

// writeStaged records st as the staged deployment. It lives in the run
// directory: a crash or power cut before finalize forgets it, so the old
// default boots.
func (h *Host) writeStaged(st *sysroot.Staged) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	p := h.runPath(sysroot.StagedFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, append(data, '\n'), 0o644)
}

// stagedBootFiles returns the absolute paths of the staged deployment's
// kernel and initramfs, which no entry names yet but finalize will.
func (h *Host) stagedBootFiles() []string {
	st, err := h.readStaged()
	if err != nil || st == nil {
		return nil
	}
	var out []string
	for _, p := range append([]string{st.Linux}, st.Initrd...) {
		if p != "" {
			out = append(out, h.BootJoin(filepath.FromSlash(p)))
		}
	}
	return out
}

// stagedDeployment describes the staged deployment for the list, after
// the deployments with entries.
func (h *Host) stagedDeployment(ds *Deployments) *Deployment {
	st, err := h.readStaged()
	if st == nil && err == nil {
		return nil
	}
	d := &Deployment{Index: len(ds.List), Staged: true}
	if err != nil {
		d.Problem = fmt.Sprintf("staged record: %v", err)
		return d
	}
	d.Image = st.Image
	d.Entry = &bootcfg.Entry{ID: EntryID(st.Image), Title: st.Title, Linux: st.Linux, Initrd: st.Initrd, Options: []string{st.Options}}
	if st.Tries > 0 {
		d.Entry.Counter = &bootcfg.BootCounter{Left: st.Tries}
	}
	h.readState(d)
	return d
}

// discardStaged forgets the staged deployment, if any: its record, and
// its state and boot files unless a deployment with an entry uses them.
// It returns the image that was staged.
func (h *Host) discardStaged(ds *Deployments) (verity.Digest, error) {
	st, err := h.readStaged()
	if err != nil || st == nil {
		// An unreadable record is forgotten as well: finalize could not
		// use it either.
		if err != nil {
			h.logf("discarding an unreadable staged record: %v", err)
			return verity.Digest{}, os.Remove(h.runPath(sysroot.StagedFile))
		}
		return verity.Digest{}, nil
	}
	files := append([]string{st.Linux}, st.Initrd...)
	if err := os.Remove(h.runPath(sysroot.StagedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return verity.Digest{}, err
	}
	if ds.ByImage(st.Image) == nil {
		if err := h.discardState(st.Image); err != nil {
			return st.Image, err
		}
	}
	if _, err := h.removeUnreferencedBootFiles(files); err != nil {
		return st.Image, err
	}
	h.logf("discarded the staged deployment %s", st.Image)
	return st.Image, nil
}

// Finalized says what Finalize did.
type Finalized struct {
	Image    verity.Digest `json:"image"`
	Entry    string        `json:"entry"`
	Merge    *MergeReport  `json:"etc_merge,omitempty"`
	Removed  []Removed     `json:"removed"`
	Warnings []string      `json:"warnings,omitempty"`
}

// Finalize makes the staged deployment the default, at the running
// system's shutdown: it builds the deployment's /etc again from the new
// image and the merge deployment's /etc as it is now (edits made after
// staging are kept), then writes the entry. Without a staged deployment it
// does nothing (nil). A failure leaves the old default, forgets the staged
// deployment and records why on the sysroot, where the next status shows
// it.
func (h *Host) Finalize() (fin *Finalized, err error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := h.readStaged()
	if err != nil || st == nil {
		return nil, err
	}
	u := &undo{}
	defer func() {
		if err == nil {
			return
		}
		if uerr := u.run(h.Boot); uerr != nil {
			err = errors.Join(err, uerr)
		}
		if _, derr := h.discardStaged(ds); derr != nil {
			err = errors.Join(err, derr)
		}
		if rerr := h.recordFinalizeFailure(st.Image, err); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	fin = &Finalized{Image: st.Image}
	if ds.ByImage(st.Image) == nil {
		fin.Merge, err = h.restage(ds, st, u)
		if err != nil {
			return nil, err
		}
	}
	if err := checkpoint("finalize-state"); err != nil {
		return nil, err
	}
	e := &bootcfg.Entry{ID: EntryID(st.Image), Title: st.Title, Linux: st.Linux, Initrd: st.Initrd}
	e.SetCmdline(bootcfg.ParseCmdline(st.Options))
	if st.Tries > 0 {
		e.Counter = &bootcfg.BootCounter{Left: st.Tries}
	}
	if err := checkCmdline(e.Cmdline()); err != nil {
		return nil, err
	}
	if fin.Entry, err = h.writeEntry(e, ds.frontVersion(), u); err != nil {
		return nil, err
	}
	if err := checkpoint("entry"); err != nil {
		return nil, err
	}
	if fin.Warnings, fin.Removed, err = h.afterNewDefault(u, st.NoRetention, st.KeepRollback); err != nil {
		return nil, err
	}
	if err := os.Remove(h.runPath(sysroot.StagedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		fin.Warnings = append(fin.Warnings, err.Error())
	}
	h.logf("finalized %s: it is the default", st.Image)
	return fin, nil
}

// restage builds the staged deployment's state again, merging the /etc
// changes of its merge deployment as they are now.
func (h *Host) restage(ds *Deployments, st *sysroot.Staged, u *undo) (*MergeReport, error) {
	c, root, err := h.Repo.CommitTree(st.Commit)
	if err != nil {
		return nil, err
	}
	merge := ds.ByImage(st.MergedFrom)
	if merge == nil && !st.MergedFrom.IsZero() {
		return nil, fmt.Errorf("the deployment %s whose /etc the staged one merges is gone", st.MergedFrom)
	}
	o, err := sysroot.ReadOrigin(h.Deployment(st.Image))
	if err != nil {
		o = &sysroot.Origin{Commit: st.Commit, Stateroot: st.Stateroot, Image: st.Image,
			Kernel: c.Kernel.Version, Version: c.Version, Subject: c.Subject, MergedFrom: st.MergedFrom}
	}
	o.Created = time.Now().UTC().Truncate(time.Second)
	_, rep, err := h.createDeployment(root, st.Image, *o, merge, u)
	if err != nil {
		return nil, err
	}
	if rep != nil {
		h.logf("%s", rep.String())
	}
	return rep, nil
}

// recordFinalizeFailure keeps why a finalize failed on the sysroot.
func (h *Host) recordFinalizeFailure(img verity.Digest, cause error) error {
	data, err := json.MarshalIndent(sysroot.FinalizeFailure{Time: time.Now().UTC().Truncate(time.Second), Image: img, Error: cause.Error()}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(h.Join(sysroot.FinalizeFailed), append(data, '\n'), 0o644)
}

// FinalizeFailure returns the record of the last failed finalize, nil if
// the last one worked (or none ran).
func (h *Host) FinalizeFailure() (*sysroot.FinalizeFailure, error) {
	return sysroot.ReadFinalizeFailure(h.Join(sysroot.FinalizeFailed))
}

// MarkGood marks the running system's deployment good: a boot counter in
// its entry's file name is dropped (NAME+1-2.conf becomes NAME.conf), so
// the boot loader stops counting its tries. It returns the entry file
// and whether it was counted.
func (h *Host) MarkGood() (string, bool, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if !ds.Running {
		return "", false, fmt.Errorf("sysroot %s: %w", h.Path, ErrNotRunning)
	}
	d := ds.Booted
	if d == nil {
		return "", false, fmt.Errorf("the running system booted none of the deployments in %s", h.Entries())
	}
	if d.Entry.Counter == nil {
		return d.Entry.File, false, nil
	}
	good := d.Entry.ID + ".conf"
	dir := h.Entries()
	// One rename: the boot loader sees the counted or the good name.
	if err := os.Rename(filepath.Join(dir, d.Entry.File), filepath.Join(dir, good)); err != nil {
		return "", false, fmt.Errorf("mark %s good: %w", d.Entry.File, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return "", false, err
	}
	return good, true, nil
}
