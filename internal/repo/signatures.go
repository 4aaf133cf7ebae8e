package repo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// A commit's signatures live beside its index link, in
// commits/<id>.sig, so that a repository served as static files publishes
// them with the commit. The repository stores the file's bytes; package
// sign defines and checks what is in it.
const signatureSuffix = ".sig"

// MaxSignatureFile bounds a signature file (a few signatures of a few
// hundred bytes each).
const MaxSignatureFile = 64 << 10

// ErrNoSignature is returned for a commit that has no signature file.
var ErrNoSignature = errors.New("commit is not signed")

// SignaturePath is where the signatures of commit id are stored; the same
// path relative to the repository is where a remote publishes them.
func SignaturePath(id verity.Digest) string {
	return commitsDir + "/" + id.String() + signatureSuffix
}

// CommitSignatures returns the signature file of commit id, or
// ErrNoSignature.
func (r *Repo) CommitSignatures(id verity.Digest) ([]byte, error) {
	f, err := os.Open(filepath.Join(r.Path, filepath.FromSlash(SignaturePath(id))))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("commit %s: %w", id, ErrNoSignature)
	}
	if err != nil {
		return nil, fmt.Errorf("commit %s: read signatures: %w", id, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSignatureFile+1))
	if err != nil {
		return nil, fmt.Errorf("commit %s: read signatures: %w", id, err)
	}
	if len(data) > MaxSignatureFile {
		return nil, fmt.Errorf("commit %s: signature file %s is larger than %d bytes", id, f.Name(), MaxSignatureFile)
	}
	return data, nil
}

// SetCommitSignatures replaces the signature file of commit id, which
// must be in the repository's objects, atomically and durably.
func (r *Repo) SetCommitSignatures(id verity.Digest, data []byte) error {
	if err := r.writable(); err != nil {
		return err
	}
	if len(data) > MaxSignatureFile {
		return fmt.Errorf("commit %s: signature file of %d bytes, at most %d allowed", id, len(data), MaxSignatureFile)
	}
	if !r.objects.Has(id) {
		return fmt.Errorf("commit %s: %w", id, ErrNoCommit)
	}
	p := filepath.Join(r.Path, filepath.FromSlash(SignaturePath(id)))
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("commit %s: store signatures: %w", id, err)
	}
	return nil
}
