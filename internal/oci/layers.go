package oci

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync/atomic"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/tarimport"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Applied layers are kept in the repository as images named
// oci/layers/<algorithm>-<hex of the layer digest>, so that a later pull
// of an image sharing them downloads only the layers it has not seen. The
// layer's tree is stored as it is in the layer, whiteout entries included;
// marker xattrs record what the tree alone cannot say. Markers found in a
// layer's own content are dropped, so they cannot be forged.
const (
	layerRefPrefix = "oci/layers/"
	markerPrefix   = "user.cfs-deploy.oci."
	markerImplicit = markerPrefix + "implicit"  // a directory without an entry
	markerLink     = markerPrefix + "lowerlink" // a hard link to a lower layer: target path
)

func layerRefName(d v1.Hash) string { return layerRefPrefix + d.Algorithm + "-" + d.Hex }

// cachedLayer loads a layer applied before, or returns nil.
func cachedLayer(r *repo.Repo, d v1.Hash) *layer {
	img, err := r.NamedImage(layerRefName(d))
	if err != nil {
		return nil
	}
	im, err := r.ReadImage(img)
	if err != nil {
		return nil // gone or damaged: fetch the layer again
	}
	if r.CheckObjects(im.Root) != nil {
		return nil
	}
	return decodeMarkers(im.Root)
}

// keepLayer stores the tree of a layer under its name. The tree is
// unchanged on return.
func keepLayer(r *repo.Repo, d v1.Hash, l *layer) error {
	encodeMarkers(l)
	_, err := r.AddNamedImage(layerRefName(d), l.root)
	decodeMarkers(l.root)
	return err
}

func encodeMarkers(l *layer) {
	for n := range l.implicit {
		n.SetXattr(markerImplicit, "")
	}
	for n, target := range l.lowerLinks {
		n.SetXattr(markerLink, target)
	}
}

// decodeMarkers strips the marker xattrs from a tree and returns the layer
// they describe.
func decodeMarkers(root *erofs.Node) *layer {
	l := &layer{root: root, implicit: map[*erofs.Node]bool{}, lowerLinks: map[*erofs.Node]string{}}
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo != nil {
			return nil
		}
		kept := n.Xattrs[:0]
		for _, x := range n.Xattrs {
			switch {
			case x.Key == markerImplicit && n.IsDir():
				l.implicit[n] = true
			case x.Key == markerLink && n.IsRegular():
				l.lowerLinks[n] = x.Value
			case strings.HasPrefix(x.Key, markerPrefix):
			default:
				kept = append(kept, x)
			}
		}
		if len(kept) == 0 {
			kept = nil
		}
		n.Xattrs = kept
		return nil
	})
	return l
}

// stripMarkers removes marker xattrs a layer's content carries itself.
func stripMarkers(root *erofs.Node) {
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo != nil {
			return nil
		}
		kept := n.Xattrs[:0]
		for _, x := range n.Xattrs {
			if !strings.HasPrefix(x.Key, markerPrefix) {
				kept = append(kept, x)
			}
		}
		if len(kept) == 0 {
			kept = nil
		}
		n.Xattrs = kept
		return nil
	})
}

// importLayer downloads a layer (gzip, zstd or plain tar), stores its
// files as objects and returns its tree. The compressed bytes must have
// the layer's digest and the uncompressed ones diffID; otherwise the
// layer is refused (objects already stored are named by their own content
// and harmless; gc collects them).
func importLayer(r *repo.Repo, l v1.Layer, diffID v1.Hash, received *atomic.Int64) (*layer, int, error) {
	d, err := l.Digest()
	if err != nil {
		return nil, 0, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", d, err)
	}
	defer rc.Close()
	hc, err := newHash(d)
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", d, err)
	}
	hu, err := newHash(diffID)
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: diff id %s: %w", d, diffID, err)
	}
	br := bufio.NewReaderSize(io.TeeReader(rc, io.MultiWriter(hc, countWriter{received})), 1<<16)
	var tarStream io.Reader
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, 0, fmt.Errorf("layer %s: %w", d, err)
		}
		defer zr.Close()
		tarStream = zr
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, 0, fmt.Errorf("layer %s: %w", d, err)
		}
		defer zr.Close()
		tarStream = zr
	default:
		tarStream = br
	}
	res, err := tarimport.ImportWith(io.TeeReader(tarStream, hu), r.Objects(), tarimport.Options{InlineMax: erofs.RecommendedInlineMax, Layer: true})
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", d, err)
	}
	// The tar reader stops at the end-of-archive blocks; the digests cover
	// everything after them too.
	if _, err := io.Copy(hu, tarStream); err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", d, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", d, err)
	}
	if got := hex.EncodeToString(hc.Sum(nil)); got != d.Hex {
		return nil, 0, fmt.Errorf("layer %s: the bytes received have digest %s:%s", d, d.Algorithm, got)
	}
	if got := hex.EncodeToString(hu.Sum(nil)); got != diffID.Hex {
		return nil, 0, fmt.Errorf("layer %s: its uncompressed content has digest %s:%s, the image configuration says %s", d, diffID.Algorithm, got, diffID)
	}
	stripMarkers(res.Root)
	return &layer{root: res.Root, implicit: res.Implicit, lowerLinks: res.LowerLinks}, res.NewObjects, nil
}

func newHash(h v1.Hash) (hash.Hash, error) {
	if h.Algorithm != "sha256" {
		return nil, fmt.Errorf("unsupported digest algorithm %q", h.Algorithm)
	}
	return sha256.New(), nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) {
	if c.n != nil {
		c.n.Add(int64(len(p)))
	}
	return len(p), nil
}
