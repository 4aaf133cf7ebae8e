package repo

import (
	"encoding/json"
	"fmt"
	"os"
)

// Meta is meta.json, in the shape composefs-rs uses so the tools can
// recognise each other's repositories.
type Meta struct {
	Version   int      `json:"version"`
	Algorithm string   `json:"algorithm"`
	Features  Features `json:"features"`
}

// Features follow the ext4 model: unknown incompatible features make a
// repository unusable, unknown read-only-compatible ones read-only.
type Features struct {
	Compatible         []string `json:"compatible"`
	ReadOnlyCompatible []string `json:"read-only-compatible"`
	Incompatible       []string `json:"incompatible"`
}

const (
	metaVersion   = 1
	hashAlgorithm = "fsverity-sha256-12"
	// featureCommits marks repositories holding cfs-deploy commit records
	// and branches; tools that do not know them may still read images.
	featureCommits = "cfs-deploy-commits"
	// featureSecure records that the repository was created secure, so
	// that a meta.json that lost its fs-verity (replaced, restored, copied
	// to another filesystem) is refused instead of quietly read as an
	// insecure repository.
	featureSecure = "cfs-deploy-secure"
)

// knownReadOnlyCompatible are the read-only-compatible features this
// version can write to a repository with.
var knownReadOnlyCompatible = map[string]bool{}

func newMeta(secure bool) Meta {
	compat := []string{featureCommits}
	if secure {
		compat = append(compat, featureSecure)
	}
	return Meta{
		Version:   metaVersion,
		Algorithm: hashAlgorithm,
		Features: Features{
			Compatible:         compat,
			ReadOnlyCompatible: []string{},
			Incompatible:       []string{},
		},
	}
}

func readMeta(path string) (Meta, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Meta{}, err
	}
	return ParseMeta(data, path)
}

// ParseMeta parses and checks a repository's meta.json (named name in
// errors): this version must be able to read the repository it describes.
func ParseMeta(data []byte, name string) (Meta, error) {
	var m Meta
	path := name
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("parse %s: %w", path, err)
	}
	if m.Version != metaVersion {
		return m, fmt.Errorf("%s: repository format version %d, this tool knows %d", path, m.Version, metaVersion)
	}
	if m.Algorithm != hashAlgorithm {
		return m, fmt.Errorf("%s: hash algorithm %q, this tool supports only %q", path, m.Algorithm, hashAlgorithm)
	}
	if len(m.Features.Incompatible) > 0 {
		return m, fmt.Errorf("%s: unknown incompatible features %v", path, m.Features.Incompatible)
	}
	return m, nil
}

func (m Meta) has(feature string) bool {
	for _, f := range m.Features.Compatible {
		if f == feature {
			return true
		}
	}
	return false
}

// unknownReadOnly lists read-only-compatible features this version does
// not know: it may read such a repository but must not change it.
func (m Meta) unknownReadOnly() []string {
	var out []string
	for _, f := range m.Features.ReadOnlyCompatible {
		if !knownReadOnlyCompatible[f] {
			out = append(out, f)
		}
	}
	return out
}
