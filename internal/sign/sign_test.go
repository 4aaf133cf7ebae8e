package sign

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

func mustKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func TestVerify(t *testing.T) {
	a, b := mustKey(t), mustKey(t)
	record := []byte(`{"image":"00","time":"2026-01-01T00:00:00Z"}` + "\n")
	f := &File{}
	f.Add(Sign(record, a))
	signedA := f.Marshal()

	if k, err := Verify(record, signedA, []ed25519.PublicKey{pub(b), pub(a)}); err != nil || !k.Equal(pub(a)) {
		t.Fatalf("good signature: %v", err)
	}
	if _, err := Verify(record, nil, []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
	if _, err := Verify(record, []byte(`{"signatures":[]}`), []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrUnsigned) {
		t.Errorf("empty signature list: %v", err)
	}
	if _, err := Verify(record, signedA, []ed25519.PublicKey{pub(b)}); !errors.Is(err, ErrUntrusted) {
		t.Errorf("signed by another key: %v", err)
	} else {
		t.Log(err)
	}
	if _, err := Verify(record, signedA, nil); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v", err)
	}
	// The record changed after signing: one byte is enough.
	tampered := append([]byte(nil), record...)
	tampered[10] ^= 1
	if _, err := Verify(tampered, signedA, []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered record: %v", err)
	}
	// A signature of another record moved over.
	g := &File{}
	g.Add(Sign(tampered, a))
	if _, err := Verify(record, g.Marshal(), []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature of another record: %v", err)
	}
	// A signature without the context prefix (a plain signature of the
	// record bytes) is not accepted.
	raw := Signature{Key: f.Signatures[0].Key, Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(a, record))}
	if _, err := Verify(record, (&File{Signatures: []Signature{raw}}).Marshal(), []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature without context: %v", err)
	}
	// Two keys; re-signing with one replaces its entry.
	f.Add(Sign(record, b))
	f.Add(Sign(record, b))
	if len(f.Signatures) != 2 {
		t.Fatalf("%d signatures after signing twice with b", len(f.Signatures))
	}
	if _, err := Verify(record, f.Marshal(), []ed25519.PublicKey{pub(b)}); err != nil {
		t.Errorf("second key: %v", err)
	}
	for _, bad := range []string{`not json`, `{"signatures":[{"key":"xx","signature":"yy"}]}`, `{"sigs":[]}`} {
		if _, err := Verify(record, []byte(bad), []ed25519.PublicKey{pub(a)}); err == nil {
			t.Errorf("malformed file %q accepted", bad)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	priv, pubf := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	os.WriteFile(priv, MarshalPrivateKey(k), 0o600)
	os.WriteFile(pubf, MarshalPublicKey(pub(k)), 0o644)
	got, err := LoadPrivateKey(priv)
	if err != nil || !got.Equal(k) {
		t.Fatalf("LoadPrivateKey: %v", err)
	}
	for _, spec := range []string{pubf, priv, "ed25519:" + base64.StdEncoding.EncodeToString(pub(k))} {
		p, err := ParsePublicKey(spec)
		if err != nil || !p.Equal(pub(k)) {
			t.Errorf("ParsePublicKey(%s): %v", spec, err)
		}
	}
	for _, bad := range []string{"ed25519:AAAA", filepath.Join(dir, "missing"), "ed25519:!!"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
	if _, err := LoadPrivateKey(pubf); err == nil {
		t.Error("a public key loaded as private key")
	}

	// Keys made by OpenSSL work, and OpenSSL verifies our signatures.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	ossl := filepath.Join(dir, "ossl.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", ossl).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	ok, err := LoadPrivateKey(ossl)
	if err != nil {
		t.Fatal(err)
	}
	record := []byte("record bytes\n")
	s := Sign(record, ok)
	msg, sigf := filepath.Join(dir, "msg"), filepath.Join(dir, "sig")
	os.WriteFile(msg, []byte(Context+string(record)), 0o644)
	raw, _ := base64.StdEncoding.DecodeString(s.Signature)
	os.WriteFile(sigf, raw, 0o644)
	if out, err := exec.Command("openssl", "pkeyutl", "-verify", "-rawin", "-inkey", ossl, "-in", msg, "-sigfile", sigf).CombinedOutput(); err != nil {
		t.Fatalf("openssl pkeyutl -verify: %v\n%s", err, out)
	}
}

func TestCommitSignatures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "composefs")
	if err := repo.Init(path, repo.InitOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(path, repo.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("hello"), 0o644)
	a, b := mustKey(t), mustKey(t)

	signed, err := r.CommitDir(src, repo.CommitOptions{Branch: "main", Sign: Signer(a)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCommit(r, signed.ID, []ed25519.PublicKey{pub(a)}); err != nil {
		t.Fatalf("commit --sign-key: %v", err)
	}
	unsigned, err := r.CommitDir(src, repo.CommitOptions{Branch: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCommit(r, unsigned.ID, []ed25519.PublicKey{pub(a)}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned commit: %v", err)
	}
	// sign adds b's signature; a's stays.
	if err := SignCommit(r, signed.ID, b); err != nil {
		t.Fatal(err)
	}
	for _, k := range []ed25519.PrivateKey{a, b} {
		if _, err := VerifyCommit(r, signed.ID, []ed25519.PublicKey{pub(k)}); err != nil {
			t.Errorf("key %s: %v", KeyID(pub(k)), err)
		}
	}
}
