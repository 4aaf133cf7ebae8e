package deploy

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Deployment is one deployment on a sysroot: a boot entry that boots an
// image, and that image's state directory.
type Deployment struct {
	// Index is the position in boot order, 0 being the default.
	Index int
	Image verity.Digest
	// Entry is the boot entry; nil for a staged deployment.
	Entry *bootcfg.Entry
	// Origin is the state directory's record; nil when it could not be
	// read (Problem says why).
	Origin *sysroot.Origin
	// Stateroot is the OS whose /var the deployment uses.
	Stateroot string

	Booted   bool // the running system booted it
	Default  bool // the boot loader boots it next
	Rollback bool // the deployment after the default
	Pinned   bool // retention never removes it
	Staged   bool // prepared, becomes the default at finalize

	// Problem says what is wrong with the deployment ("" if nothing):
	// its state directory is missing or damaged, say. It may not boot.
	Problem string
}

// Bad reports whether the boot loader has given up on the deployment:
// its entry's boot counter ran out.
func (d *Deployment) Bad() bool {
	return d.Entry != nil && d.Entry.Counter != nil && d.Entry.Counter.Left == 0
}

// Deployments is the list of a sysroot's deployments in boot order.
type Deployments struct {
	List []*Deployment
	// Others are boot entries in the entries directory that cfs-deploy
	// did not write; they take part in the boot loader's order.
	Others []*bootcfg.Entry
	// Running is set when the sysroot is the running system's.
	Running bool
	// Booted is the deployment the running system booted, if any.
	Booted *Deployment
	// EntryErrors names entry files that could not be read.
	EntryErrors error
	// Staged is the staged deployment, if any; it is not in List (it
	// has no entry yet) and its Index is len(List).
	Staged *Deployment
}

// All returns the deployments with entries, then the staged one.
func (ds *Deployments) All() []*Deployment {
	if ds.Staged == nil {
		return ds.List
	}
	return append(append([]*Deployment(nil), ds.List...), ds.Staged)
}

// deployments reads the sysroot's deployments: cfs-deploy's boot entries
// in the order the boot loader sorts them, each joined to the state
// directory of the image its composefs= argument names.
func (h *Host) deployments() (*Deployments, error) {
	entries, err := bootcfg.ReadEntries(h.Entries())
	ds := &Deployments{}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && entries == nil {
			err = nil
		}
		ds.EntryErrors = err
	}
	for _, e := range entries {
		if !sysroot.IsEntryID(e.ID) {
			ds.Others = append(ds.Others, e)
			continue
		}
		d := &Deployment{Index: len(ds.List), Entry: e}
		refs, err := bootcfg.ComposefsRefs(e.Cmdline())
		switch {
		case err != nil:
			d.Problem = fmt.Sprintf("entry %s: %v", e.File, err)
		case len(refs) != 1:
			d.Problem = fmt.Sprintf("entry %s names %d composefs images, want 1", e.File, len(refs))
		default:
			d.Image = refs[0].Digest
			if sysroot.EntryID(d.Image) != e.ID {
				d.Problem = fmt.Sprintf("entry %s boots image %s, which its name does not match", e.File, d.Image)
			}
		}
		if d.Problem == "" {
			h.readState(d)
		}
		ds.List = append(ds.List, d)
	}
	if len(ds.List) > 0 {
		ds.List[0].Default = true
	}
	if len(ds.List) > 1 {
		ds.List[1].Rollback = true
	}
	ds.Staged = h.stagedDeployment(ds)
	if img, ok := h.running(); ok {
		ds.Running = true
		for _, d := range ds.List {
			if d.Image == img && d.Problem == "" {
				d.Booted = true
				ds.Booted = d
				break
			}
		}
	}
	return ds, nil
}

// readState fills in what the state directory says about d.
func (h *Host) readState(d *Deployment) {
	dir := h.Deployment(d.Image)
	if err := sysroot.CheckDirNoSymlinks(h.Path, sysroot.DeploymentRel(d.Image)+"/"+sysroot.EtcDir); err != nil {
		d.Problem = fmt.Sprintf("state: %v", err)
		return
	}
	o, err := sysroot.ReadOrigin(dir)
	if err != nil {
		d.Problem = fmt.Sprintf("origin: %v", err)
		return
	}
	d.Origin = o
	d.Stateroot = o.Stateroot
	if sr, err := sysroot.ReadStateroot(dir); err != nil {
		d.Problem = fmt.Sprintf("stateroot: %v", err)
	} else if sr != "" {
		d.Stateroot = sr
	}
	if d.Stateroot == "" {
		d.Stateroot = sysroot.DefaultStateroot
	}
	if _, err := os.Lstat(dirJoin(dir, sysroot.PinnedFile)); err == nil {
		d.Pinned = true
	}
}

func dirJoin(dir, name string) string { return dir + string(os.PathSeparator) + name }

// ErrNoDeployment is returned for an index that names no deployment.
var ErrNoDeployment = errors.New("no such deployment")

// At returns the deployment with the given index; the staged one, if
// any, comes after those with entries.
func (ds *Deployments) At(index int) (*Deployment, error) {
	all := ds.All()
	if index < 0 || index >= len(all) {
		return nil, fmt.Errorf("deployment %d: %w (there are %d)", index, ErrNoDeployment, len(all))
	}
	return all[index], nil
}

// ByImage returns the deployment of img, or nil.
func (ds *Deployments) ByImage(img verity.Digest) *Deployment {
	for _, d := range ds.List {
		if d.Image == img && d.Problem == "" {
			return d
		}
	}
	return nil
}

// frontVersion is the entry version that puts an entry before every
// deployment: one more than the highest. Versions are plain numbers so
// that every boot loader's version comparison agrees on them.
func (ds *Deployments) frontVersion() string {
	max := uint64(0)
	for _, d := range ds.List {
		if d.Entry == nil {
			continue
		}
		if v, err := strconv.ParseUint(d.Entry.Version, 10, 63); err == nil && v > max {
			max = v
		}
	}
	return strconv.FormatUint(max+1, 10)
}
