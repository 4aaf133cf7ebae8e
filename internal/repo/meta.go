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
)

func newMeta() Meta {
	return Meta{
		Version:   metaVersion,
		Algorithm: hashAlgorithm,
		Features: Features{
			Compatible:         []string{featureCommits},
			ReadOnlyCompatible: []string{},
			Incompatible:       []string{},
		},
	}
}

func readMeta(path string) (Meta, error) {
	var m Meta
	data, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
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
