package deploy

import (
	"fmt"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/etcmerge"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

// MergeReport is what the /etc merge of a new deployment did.
type MergeReport = etcmerge.Result

// etcBase is the /etc of a deployment's image, for the merge and etc-diff.
func (h *Host) etcBase(d *Deployment) (etcmerge.Base, error) {
	root, err := h.imageTree(d)
	if err != nil {
		return etcmerge.Base{}, err
	}
	return etcmerge.Base{Root: treeNode(root, "/etc"), Open: h.Repo.OpenContent}, nil
}

// mergeEtc applies the local /etc changes of the merge deployment m onto
// dest, which holds the new image's /etc.
func (h *Host) mergeEtc(m *Deployment, dest string) (*MergeReport, error) {
	base, err := h.etcBase(m)
	if err != nil {
		return nil, fmt.Errorf("merge /etc from deployment %s: %w", m.Image, err)
	}
	local := filepath.Join(h.Deployment(m.Image), sysroot.EtcDir)
	rep, err := etcmerge.Merge(base, local, dest)
	if err != nil {
		return nil, fmt.Errorf("merge /etc from %s: %w", local, err)
	}
	return rep, nil
}

// imageTree loads the tree of a deployment's image.
func (h *Host) imageTree(d *Deployment) (*erofs.Node, error) {
	if h.Repo == nil {
		return nil, fmt.Errorf("the repository is needed to read image %s", d.Image)
	}
	img, err := h.Repo.ReadImage(d.Image)
	if err != nil {
		return nil, fmt.Errorf("image %s of deployment %d: %w", d.Image, d.Index, err)
	}
	return img.Root, nil
}

// EtcDiff lists the local changes of a deployment's /etc against its
// image's /etc, like `ostree admin config-diff`.
func (h *Host) EtcDiff(index int) (*Deployment, []etcmerge.Change, error) {
	ds, err := h.deployments()
	if err != nil {
		return nil, nil, err
	}
	d, err := ds.At(index)
	if err != nil {
		return nil, nil, err
	}
	if d.Problem != "" {
		return nil, nil, fmt.Errorf("deployment %d: %s: %w", index, d.Problem, ErrDamaged)
	}
	base, err := h.etcBase(d)
	if err != nil {
		return nil, nil, err
	}
	changes, err := etcmerge.Diff(base, filepath.Join(h.Deployment(d.Image), sysroot.EtcDir))
	if err != nil {
		return nil, nil, err
	}
	return d, changes, nil
}
