package oci

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Transports, named as skopeo names them.
const (
	Docker     = "docker"      // docker://REGISTRY/REPO[:TAG|@DIGEST]
	Layout     = "oci"         // oci:DIR[:TAG]
	Archive    = "oci-archive" // oci-archive:FILE[:TAG]
	refNameKey = "org.opencontainers.image.ref.name"
)

// Ref is a parsed image reference.
type Ref struct {
	Transport string
	// Name is the registry reference (Docker) or the directory or archive
	// path (Layout, Archive).
	Name string
	// Tag picks an image of a layout or archive by its ref.name
	// annotation; empty: the only image there is.
	Tag string
}

func (r Ref) String() string {
	switch r.Transport {
	case Docker:
		return "docker://" + r.Name
	case Layout, Archive:
		if r.Tag != "" {
			return r.Transport + ":" + r.Name + ":" + r.Tag
		}
		return r.Transport + ":" + r.Name
	}
	return r.Name
}

// IsImageRef reports whether s names a container image rather than a
// published repository.
func IsImageRef(s string) bool {
	return strings.HasPrefix(s, "docker://") || strings.HasPrefix(s, Layout+":") || strings.HasPrefix(s, Archive+":")
}

// ParseRef parses docker://..., oci:DIR[:TAG] and oci-archive:FILE[:TAG].
// As with skopeo, a layout or archive path cannot contain ':'.
func ParseRef(s string) (Ref, error) {
	if rest, ok := strings.CutPrefix(s, "docker://"); ok {
		if rest == "" {
			return Ref{}, fmt.Errorf("image reference %q: no image named", s)
		}
		return Ref{Transport: Docker, Name: rest}, nil
	}
	for _, t := range []string{Archive, Layout} {
		if rest, ok := strings.CutPrefix(s, t+":"); ok {
			p, tag, _ := strings.Cut(rest, ":")
			if p == "" {
				return Ref{}, fmt.Errorf("image reference %q: no path", s)
			}
			return Ref{Transport: t, Name: p, Tag: tag}, nil
		}
	}
	return Ref{}, fmt.Errorf("image reference %q: expected docker://, oci: or oci-archive:", s)
}

// Access holds what talking to a registry needs.
type Access struct {
	// Insecure allows plain HTTP (and unverified TLS) to a registry other
	// than localhost/127.0.0.1, which are reached over plain HTTP anyway.
	Insecure bool
	// Keychain finds credentials (default: ~/.docker/config.json and the
	// other places docker and podman keep them).
	Keychain authn.Keychain
	// Transport, if set, carries the registry traffic (tests count bytes).
	Transport http.RoundTripper
}

func (a Access) remoteOptions(ctx context.Context) []remote.Option {
	kc := a.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if a.Transport != nil {
		opts = append(opts, remote.WithTransport(a.Transport))
	}
	return opts
}

func (a Access) parseName(ref Ref) (name.Reference, error) {
	var nopts []name.Option
	if a.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref.Name, nopts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %s: %w", ref, err)
	}
	return r, nil
}

// platform is what hosts run: images are resolved to it from an index.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// openImage resolves ref to one image (linux/amd64 from an index). The
// returned cleanup removes what reading an archive unpacked.
func openImage(ctx context.Context, ref Ref, a Access) (v1.Image, func(), error) {
	none := func() {}
	switch ref.Transport {
	case Docker:
		n, err := a.parseName(ref)
		if err != nil {
			return nil, none, err
		}
		img, err := remote.Image(n, append(a.remoteOptions(ctx), remote.WithPlatform(platform))...)
		if err != nil {
			return nil, none, fmt.Errorf("%s: %w", ref, err)
		}
		return img, none, nil
	case Layout:
		img, err := layoutImage(ref.Name, ref.Tag)
		if err != nil {
			return nil, none, fmt.Errorf("%s: %w", ref, err)
		}
		return img, none, nil
	case Archive:
		dir, err := os.MkdirTemp("", "cfs-deploy-oci-archive-")
		if err != nil {
			return nil, none, err
		}
		cleanup := func() { os.RemoveAll(dir) }
		if err := unpackArchive(ref.Name, dir); err != nil {
			cleanup()
			return nil, none, fmt.Errorf("%s: %w", ref, err)
		}
		img, err := layoutImage(dir, ref.Tag)
		if err != nil {
			cleanup()
			return nil, none, fmt.Errorf("%s: %w", ref, err)
		}
		return img, cleanup, nil
	}
	return nil, none, fmt.Errorf("image reference %s: unknown transport", ref)
}

// layoutImage finds the image tagged tag (or the only one) in an OCI
// layout directory.
func layoutImage(dir, tag string) (v1.Image, error) {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if tag == "" || d.Annotations[refNameKey] == tag {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0 && tag != "":
		return nil, fmt.Errorf("no image tagged %q in %s", tag, dir)
	case len(found) == 0:
		return nil, fmt.Errorf("no image in %s", dir)
	case len(found) > 1:
		return nil, fmt.Errorf("%d images in %s; name one with :TAG", len(found), dir)
	}
	return resolveDescriptor(ii, found[0])
}

// resolveDescriptor opens an image, or the linux/amd64 image of an index.
func resolveDescriptor(ii v1.ImageIndex, d v1.Descriptor) (v1.Image, error) {
	if !d.MediaType.IsIndex() {
		return ii.Image(d.Digest)
	}
	child, err := ii.ImageIndex(d.Digest)
	if err != nil {
		return nil, err
	}
	im, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.Satisfies(platform) {
			return resolveDescriptor(child, m)
		}
	}
	return nil, fmt.Errorf("index %s has no image for %s/%s", d.Digest, platform.OS, platform.Architecture)
}

// unpackArchive unpacks an oci-archive (a tar of an OCI layout) into dir,
// taking only the layout's files.
func unpackArchive(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive %s: %w", file, err)
		}
		p := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if hdr.Typeflag != tar.TypeReg || !(p == "index.json" || p == "oci-layout" || strings.HasPrefix(p, "blobs/")) || strings.Contains(p, "..") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("unpack %s: %w", p, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", p, err)
		}
	}
}
