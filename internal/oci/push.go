package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// Annotations of a pushed manifest: where it came from.
const (
	annotationCommit = "org.cfs-deploy.commit"
	annotationImage  = "org.cfs-deploy.image"
)

// PushOptions describe one push.
type PushOptions struct {
	// Ref is where the image goes: docker://... or oci:DIR[:TAG].
	Ref    string
	Access Access
}

// PushResult says what was pushed.
type PushResult struct {
	Reference string `json:"reference"`
	Manifest  string `json:"manifest"`
	Layer     string `json:"layer"`
	LayerSize int64  `json:"layer_size"`
	Commit    string `json:"commit"`
	Image     string `json:"image"`
}

// Push writes commit id of r as a one-layer OCI image (linux/amd64): a
// gzip tar of its tree (see writeTar), the commit's time as the image's
// creation time, the commit id and image digest as manifest annotations.
// Pulling it gives a commit with the same image digest.
func Push(ctx context.Context, r *repo.Repo, id verity.Digest, opts PushOptions) (*PushResult, error) {
	ref, err := ParseRef(opts.Ref)
	if err != nil {
		return nil, err
	}
	if ref.Transport == Archive {
		return nil, fmt.Errorf("%s: push writes to docker:// or oci:DIR; make an archive with skopeo copy oci:DIR oci-archive:FILE", ref)
	}
	c, root, err := r.CommitTree(id)
	if err != nil {
		return nil, err
	}
	l, err := newFileLayer(func(w io.Writer) error { return writeTar(w, r, root) })
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	defer l.remove()

	cfg := &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Created:      v1.Time{Time: c.Time},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	if c.Version != "" {
		cfg.Config.Labels = map[string]string{"org.opencontainers.image.version": c.Version}
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: c.Time}, CreatedBy: "cfs-deploy push", Comment: "commit " + id.String()}})
	if err != nil {
		return nil, err
	}
	img = mutate.Annotations(img, map[string]string{annotationCommit: id.String(), annotationImage: c.Image.String()}).(v1.Image)

	switch ref.Transport {
	case Docker:
		n, err := opts.Access.parseName(ref)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(n, img, opts.Access.remoteOptions(ctx)...); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
	case Layout:
		if err := writeLayout(ref, img); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
	}
	m, err := img.Digest()
	if err != nil {
		return nil, err
	}
	return &PushResult{Reference: ref.String(), Manifest: m.String(), Layer: l.digest.String(), LayerSize: l.size,
		Commit: id.String(), Image: c.Image.String()}, nil
}

// writeLayout adds img to an OCI layout directory (created if missing),
// replacing an image of the same tag.
func writeLayout(ref Ref, img v1.Image) error {
	p, err := layout.FromPath(ref.Name)
	if errors.Is(err, os.ErrNotExist) {
		p, err = layout.Write(ref.Name, empty.Index)
	}
	if err != nil {
		return err
	}
	if ref.Tag == "" {
		return p.AppendImage(img)
	}
	return p.ReplaceImage(img, match.Annotation(refNameKey, ref.Tag), layout.WithAnnotations(map[string]string{refNameKey: ref.Tag}))
}

// fileLayer is a gzip-compressed layer written once to a temporary file,
// its digests computed on the way: the tree is read from the repository
// once, not once per digest and once more for the upload.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func newFileLayer(write func(io.Writer) error) (*fileLayer, error) {
	f, err := os.CreateTemp("", "cfs-deploy-layer-")
	if err != nil {
		return nil, err
	}
	l := &fileLayer{path: f.Name()}
	hc, hu := sha256.New(), sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, hc), gzip.BestSpeed)
	if err == nil {
		err = write(io.MultiWriter(zw, hu))
	}
	if err == nil {
		err = zw.Close()
	}
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		l.remove()
		return nil, err
	}
	l.size = st.Size()
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hc.Sum(nil))}
	l.diffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hu.Sum(nil))}
	return l, nil
}

func (l *fileLayer) remove() { os.Remove(l.path) }

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return openGunzip(l.path) }

func openGunzip(p string) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Clean(p))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}
