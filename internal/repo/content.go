package repo

import (
	"fmt"
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// ReadContent returns the whole content of the regular file n of a tree
// (checked against its digest), refusing one larger than limit bytes:
// for the configuration files a tree transformation reads and edits.
func (r *Repo) ReadContent(n *erofs.Node, limit int64) ([]byte, error) {
	if t := n.Target(); t.IsRegular() && t.Size > uint64(limit) {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d expected", n.Path(), t.Size, limit)
	}
	rd, err := r.OpenContent(n)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Path(), err)
	}
	return data, nil
}

// PutBytes stores data as an object and returns its digest: content a
// tree transformation adds (CommitOptions.Prepare). It reaches disk with
// the commit that references it.
func (r *Repo) PutBytes(data []byte) (verity.Digest, error) {
	d, _, err := r.objects.PutBytes(data)
	if err != nil {
		return d, fmt.Errorf("store object: %w", err)
	}
	return d, nil
}
