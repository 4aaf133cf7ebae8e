package bootcfg

import (
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Kernel argument names that carry a composefs image digest.
const (
	// KeyComposefs is the C composefs / cfs-deploy spelling:
	// composefs=[?]<64 hex>.
	KeyComposefs = "composefs"
	// KeyComposefsDigest is the composefs-rs / bootc spelling:
	// composefs.digest=[?]v1-sha256-12:<64 hex>.
	KeyComposefsDigest = "composefs.digest"
)

// ImageRef is one composefs image named on the kernel command line.
type ImageRef struct {
	// Digest is the fs-verity SHA-256 digest of the image file.
	Digest verity.Digest
	// Insecure is set by a '?' right after '=': the deployment lives on a
	// filesystem without fs-verity, so the image is checked by reading it
	// and mounted without verity=require.
	Insecure bool
	// Version is the composefs-rs image format generation named by
	// composefs.digest= (1 or 2); 0 for composefs=, which names none.
	Version int
	// Source is the argument as it appears on the command line (quoted
	// only where needed), for messages.
	Source string
}

// ComposefsArg returns the argument cfs-deploy writes for an image.
func ComposefsArg(d verity.Digest, insecure bool) string {
	mark := ""
	if insecure {
		mark = "?"
	}
	return KeyComposefs + "=" + mark + d.String()
}

// ComposefsRefs returns every composefs image argument among the kernel
// arguments, in command line order; cfs-init tries them in that order.
// Both spellings are accepted. A malformed one is an error rather than
// being skipped, so a typo cannot make the system boot something else.
func ComposefsRefs(c Cmdline) ([]ImageRef, error) {
	var refs []ImageRef
	for _, p := range c.Kernel() {
		if p.Key != KeyComposefs && p.Key != KeyComposefsDigest {
			continue
		}
		r, err := ParseImageRef(p)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// ParseImageRef parses one composefs= or composefs.digest= argument.
func ParseImageRef(p Param) (ImageRef, error) {
	r := ImageRef{Source: p.String()}
	fail := func(format string, args ...any) (ImageRef, error) {
		return ImageRef{}, fmt.Errorf("kernel argument %q: %s", shorten(r.Source), fmt.Sprintf(format, args...))
	}
	if !p.HasValue {
		return fail("needs a value, for example %s=<64 hex digits>", p.Key)
	}
	v := p.Value
	if rest, ok := strings.CutPrefix(v, "?"); ok {
		r.Insecure = true
		v = rest
	}
	switch p.Key {
	case KeyComposefs:
		// composefs-rs reads a 128-digit value here as SHA-512; say so
		// rather than just "wrong length".
		if isSHA512(v) {
			return fail("SHA-512 digests are not supported, only fs-verity SHA-256 (64 hex digits)")
		}
	case KeyComposefsDigest:
		alg, digest, ok := strings.Cut(v, ":")
		if !ok {
			return fail("want %s=v1-sha256-12:<64 hex digits>", KeyComposefsDigest)
		}
		ver, err := parseAlgorithm(alg)
		if err != nil {
			return fail("%v", err)
		}
		r.Version = ver
		v = digest
	default:
		return fail("not a composefs image argument")
	}
	d, err := verity.ParseDigest(v)
	if err != nil {
		return fail("%v", err)
	}
	r.Digest = d
	return r, nil
}

// Arg returns the argument in the spelling it was parsed from, normalised
// to lowercase hex.
func (r ImageRef) Arg() string {
	if r.Version == 0 {
		return ComposefsArg(r.Digest, r.Insecure)
	}
	mark := ""
	if r.Insecure {
		mark = "?"
	}
	return fmt.Sprintf("%s=%sv%d-sha256-12:%s", KeyComposefsDigest, mark, r.Version, r.Digest)
}

// parseAlgorithm checks a composefs-rs digest descriptor,
// v<format>-<hash>-<log2 block size>, and returns the format version.
// Only what cfs-deploy can verify is accepted: SHA-256 over 4096-byte
// blocks. Both format generations are accepted because the digest is that
// of the image file either way; whether the image is readable is decided
// when it is opened.
func parseAlgorithm(alg string) (int, error) {
	parts := strings.Split(alg, "-")
	if len(parts) != 3 {
		return 0, fmt.Errorf("unknown digest algorithm %q, want v1-sha256-12", alg)
	}
	var ver int
	switch parts[0] {
	case "v1":
		ver = 1
	case "v2":
		ver = 2
	default:
		return 0, fmt.Errorf("unknown image format %q in digest algorithm %q, want v1 or v2", parts[0], alg)
	}
	switch parts[1] {
	case "sha256":
	case "sha512":
		return 0, fmt.Errorf("digest algorithm %q is not supported, only sha256", alg)
	default:
		return 0, fmt.Errorf("unknown hash %q in digest algorithm %q, want sha256", parts[1], alg)
	}
	if parts[2] != "12" {
		return 0, fmt.Errorf("digest algorithm %q: block size 2^%s is not supported, only 2^12 (4096 bytes)", alg, parts[2])
	}
	return ver, nil
}

// isSHA512 reports whether v looks like a SHA-512 digest: two SHA-256
// digests' worth of hex digits.
func isSHA512(v string) bool {
	if len(v) != 128 {
		return false
	}
	_, err1 := verity.ParseDigest(v[:64])
	_, err2 := verity.ParseDigest(v[64:])
	return err1 == nil && err2 == nil
}

// shorten keeps messages readable when an argument is huge.
func shorten(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
