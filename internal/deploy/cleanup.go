package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// ErrNoEntries is returned by Cleanup when state directories exist but
// the boot directory holds no entry of cfs-deploy: more likely the wrong
// boot directory than deployments that all lost their entries.
var ErrNoEntries = errors.New("no cfs-deploy boot entries")

// CleanupReport says what Cleanup removed.
type CleanupReport struct {
	States    []string `json:"states"`     // state directories no entry uses
	BootFiles []string `json:"boot_files"` // kernels and initramfs images no entry uses
	Temps     int      `json:"temporaries"`
}

// Cleanup removes what no deployment references: state directories
// without an entry (left by a crash during a rollout or an undeploy),
// kernels and initramfs images in the boot directory no entry names, and
// temporaries of interrupted verbs. The staged deployment's state and
// boot files are kept.
func (h *Host) Cleanup() (*CleanupReport, error) {
	ds, unlock, err := h.lockedDeployments()
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &CleanupReport{States: []string{}, BootFiles: []string{}}
	rep.Temps = h.removeStaleTemps()
	if ds.EntryErrors != nil {
		// An entry that cannot be read may name a deployment; removing
		// state on a guess could delete it.
		return nil, fmt.Errorf("cleanup: %w", ds.EntryErrors)
	}
	deployed, err := h.ListDeployed()
	if err != nil {
		return nil, err
	}
	if len(ds.List) == 0 && len(deployed) > 0 {
		return nil, fmt.Errorf("%s: %w, but %d deployment state directories in %s; is the boot directory right (--boot)?", h.Entries(), ErrNoEntries, len(deployed), h.Join(sysroot.DeployDir))
	}
	keep := map[verity.Digest]bool{}
	for _, d := range ds.List {
		keep[d.Image] = true
	}
	if st, err := h.readStaged(); err != nil {
		return nil, err
	} else if st != nil {
		keep[st.Image] = true
	}
	var errs []error
	for _, img := range deployed {
		if keep[img] {
			continue
		}
		if err := h.discardState(img); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.States = append(rep.States, h.Deployment(img))
		if err := checkpoint("cleanup-state"); err != nil {
			return rep, err
		}
	}

	if err := h.syncDeployRefs(keep); err != nil {
		errs = append(errs, err)
	}
	files, err := os.ReadDir(h.BootJoin(sysroot.BootFilesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, errors.Join(append(errs, err)...)
	}
	var candidates []string
	for _, f := range files {
		if !strings.HasPrefix(f.Name(), ".") && f.Type().IsRegular() {
			candidates = append(candidates, filepath.Join(sysroot.BootFilesDir, f.Name()))
		}
	}
	removed, err := h.removeUnreferencedBootFiles(candidates)
	rep.BootFiles = append(rep.BootFiles, removed...)
	if err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}
