package sign

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Signer returns a repo.CommitOptions.Sign function that signs new
// commits with key.
func Signer(key ed25519.PrivateKey) func(verity.Digest, []byte) ([]byte, error) {
	return func(_ verity.Digest, record []byte) ([]byte, error) {
		f := &File{}
		f.Add(Sign(record, key))
		return f.Marshal(), nil
	}
}

// SignCommit adds a signature by key to commit id of r, keeping the
// signatures by other keys that are there.
func SignCommit(r *repo.Repo, id verity.Digest, key ed25519.PrivateKey) error {
	record, err := r.CommitRecord(id)
	if err != nil {
		return err
	}
	f := &File{}
	old, err := r.CommitSignatures(id)
	switch {
	case err == nil:
		if f, err = Parse(old); err != nil {
			return fmt.Errorf("commit %s: %w", id, err)
		}
	case !errors.Is(err, repo.ErrNoSignature):
		return err
	}
	f.Add(Sign(record, key))
	return r.SetCommitSignatures(id, f.Marshal())
}

// VerifyCommit checks that commit id of r is signed by one of keys and
// returns the key that signed it.
func VerifyCommit(r *repo.Repo, id verity.Digest, keys []ed25519.PublicKey) (ed25519.PublicKey, error) {
	record, err := r.CommitRecord(id)
	if err != nil {
		return nil, err
	}
	sigs, err := r.CommitSignatures(id)
	if errors.Is(err, repo.ErrNoSignature) {
		sigs, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	k, err := Verify(record, sigs, keys)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return k, nil
}
