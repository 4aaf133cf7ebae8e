package initboot

import (
	"path/filepath"
	"time"
)

// assembleRoot builds the new root on newroot, the part both modes share:
// find the image in the repository on sysroot, verify it, mount it (its
// EROFS layer stays mounted on layerDir), and mount the deployment's /etc
// and its OS's /var over the image's.
func assembleRoot(log *Log, p *Plan, sysroot, layerDir, newroot string) (*chosenImage, *deployment, error) {
	t := log.Begin("find-image")
	if err := openRepo(sysroot); err != nil {
		return nil, nil, during("open the composefs repository", err)
	}
	img, err := chooseImage(sysroot, p.Images, log)
	if err != nil {
		return nil, nil, during("find the composefs image", err)
	}
	t.End("using image %s, named by %s", img.Rel, img.Ref.Source)

	// The deployment's state is looked up (disk reads, no writes) while
	// the image is verified and mounted.
	type lookup struct {
		dep *deployment
		err error
		d   time.Duration
	}
	found := make(chan lookup, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				found <- lookup{err: panicError(r)}
			}
		}()
		start := log.now()
		dep, err := findDeployment(sysroot, img.Ref.Digest, log)
		found <- lookup{dep, err, log.now() - start}
	}()

	t = log.Begin("verify-image")
	if err := verifyImage(img); err != nil {
		return nil, nil, during("verify image "+img.Rel, err)
	}
	if img.KernelVerity {
		t.End("image %s: fs-verity digest matches, every block read back", img.Rel)
	} else {
		t.End("image %s has no fs-verity (insecure deployment): its digest is computed while mounting", img.Rel)
	}

	t = log.Begin("mount-image")
	if err := mountImage(img, sysroot, layerDir, newroot, log); err != nil {
		return nil, nil, err
	}
	how := "verity=require"
	if img.Ref.Insecure {
		how = "without verity=require: insecure"
	}
	t.End("mounted composefs image on %s (%s)", newroot, how)

	t = log.Begin("state")
	l := <-found
	log.addStep("find-state (overlapped)", l.d)
	if l.err != nil {
		return img, nil, during("find the deployment's state", l.err)
	}
	dep := l.dep
	if err := prepareVar(sysroot, dep, log); err != nil {
		return img, dep, err
	}
	if err := bindState(sysroot, newroot, dep); err != nil {
		return img, dep, err
	}
	t.End("mounted %s on /etc and %s on /var", dep.Etc, dep.Var)
	return img, dep, nil
}

// fill puts what assembleRoot found into r. sysroot is where the
// physical root will be seen from the booted system.
func fillRecord(r *BootRecord, img *chosenImage, dep *deployment, sysroot string) {
	r.Digest = img.Ref.Digest
	r.Arg = img.Ref.Source
	r.Insecure = img.Ref.Insecure
	r.KernelVerity = img.KernelVerity
	r.Sysroot = sysroot
	r.Image = filepath.Join(sysroot, img.Rel)
	r.Deployment = filepath.Join(sysroot, dep.Dir)
	r.StateRoot = dep.StateRoot
	r.Etc = filepath.Join(sysroot, dep.Etc)
	r.Var = filepath.Join(sysroot, dep.Var)
}
