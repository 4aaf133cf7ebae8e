package deploy

import (
	"errors"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// DeployImageRefPrefix is where deployments' images are named under the
// repository's images/refs/: composefs-rs's garbage collector keeps only
// the images named there, so a repository both tools use keeps what boots.
const DeployImageRefPrefix = "cfs-deploy/deploy/"

func deployRef(img verity.Digest) string { return DeployImageRefPrefix + img.String() }

// setDeployRef names a deployment's image. Without the repository (verbs
// that only rearrange entries) there is nothing to do.
func (h *Host) setDeployRef(img verity.Digest) error {
	if h.Repo == nil {
		return nil
	}
	return h.Repo.SetImageRef(deployRef(img), img)
}

// syncDeployRefs makes the deployment names under images/refs/ exactly
// the deployments in keep: names a crash or an older version left go,
// missing ones are made.
func (h *Host) syncDeployRefs(keep map[verity.Digest]bool) error {
	if h.Repo == nil {
		return nil
	}
	refs, err := h.Repo.ImageRefs(DeployImageRefPrefix)
	if err != nil {
		return err
	}
	var errs []error
	for name, img := range refs {
		if !keep[img] || name != deployRef(img) {
			errs = append(errs, h.Repo.RemoveImageRef(name))
		}
	}
	for img := range keep {
		if _, ok := refs[deployRef(img)]; !ok {
			errs = append(errs, h.setDeployRef(img))
		}
	}
	return errors.Join(errs...)
}
