package repo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// MaxImageSize bounds what is read back (or fetched) as an image:
// composefs images hold metadata only, so even huge trees stay far below
// this.
const MaxImageSize = 1 << 30

// writeImage writes the composefs image of root as an object and returns
// its fs-verity digest. The caller indexes it under images/ once the
// object is synced.
func (r *Repo) writeImage(root *erofs.Node) (verity.Digest, error) {
	var buf bytes.Buffer
	if err := erofs.Write(&buf, root, erofs.DefaultWriteOptions); err != nil {
		return verity.Digest{}, fmt.Errorf("write image: %w", err)
	}
	d, _, err := r.objects.PutBytes(buf.Bytes())
	if err != nil {
		return verity.Digest{}, fmt.Errorf("store image: %w", err)
	}
	return d, nil
}

// ImagePath is the path of an image by digest, through its images/ link.
func (r *Repo) ImagePath(d verity.Digest) string {
	return filepath.Join(r.Path, imagesDir, d.String())
}

// HasImage reports whether the repository indexes an image with digest d.
func (r *Repo) HasImage(d verity.Digest) bool {
	_, err := os.Stat(r.ImagePath(d))
	return err == nil
}

// ReadImage loads and parses an image, verifying its digest.
func (r *Repo) ReadImage(d verity.Digest) (*erofs.Image, error) {
	data, err := r.readObject(d, MaxImageSize)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", d, err)
	}
	img, err := erofs.ReadImage(data)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", d, err)
	}
	return img, nil
}

// Images lists the digests of the images indexed in the repository.
func (r *Repo) Images() ([]verity.Digest, error) { return r.listIndex(imagesDir) }

// CommitTree loads the tree of a commit.
func (r *Repo) CommitTree(id verity.Digest) (*Commit, *erofs.Node, error) {
	c, err := r.ReadCommit(id)
	if err != nil {
		return nil, nil, err
	}
	img, err := r.ReadImage(c.Image)
	if err != nil {
		return c, nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return c, img.Root, nil
}
