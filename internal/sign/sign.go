// Package sign makes and checks detached ed25519 signatures of commit
// records.
//
// A signature covers the exact bytes of a commit record (whose fs-verity
// digest is the commit id), prefixed with a context string so that it
// cannot be mistaken for a signature of anything else:
//
//	message = "cfs-deploy commit signature v1\n" || record
//
// A commit's signature file (commits/<id>.sig in a repository) is JSON:
//
//	{"signatures": [{"key": "<base64 of the 32-byte public key>",
//	                 "signature": "<base64 of the 64-byte signature>"}]}
//
// with at most one entry per key. Keys are stored in PEM files as
// OpenSSL writes them (PKCS#8 "PRIVATE KEY", PKIX "PUBLIC KEY"), so
// `openssl genpkey -algorithm ed25519` makes a usable key too. Where a
// configuration file lists trusted keys, an entry is either the path of a
// public key file or "ed25519:" followed by the base64 public key.
package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Context is the prefix of every signed message.
const Context = "cfs-deploy commit signature v1\n"

// Errors Verify returns; callers decide with errors.Is.
var (
	// ErrUnsigned: the commit has no signatures at all.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUntrusted: the commit carries signatures, but none by a trusted
	// key.
	ErrUntrusted = errors.New("commit is not signed by a trusted key")
	// ErrBadSignature: a signature by a trusted key does not match the
	// record (the record or the signature was changed after signing).
	ErrBadSignature = errors.New("signature does not match the commit record")
	// ErrNoKeys: a check was asked for with no trusted keys.
	ErrNoKeys = errors.New("no trusted keys to check signatures against")
)

// Signature is one entry of a signature file.
type Signature struct {
	Key       string `json:"key"`
	Signature string `json:"signature"`
}

// File is a commit's signature file.
type File struct {
	Signatures []Signature `json:"signatures"`
}

// KeyID is a short, stable name for a public key in messages: the first 16
// hex digits of the SHA-256 of the raw key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

func message(record []byte) []byte {
	return append([]byte(Context), record...)
}

// Sign signs a commit record.
func Sign(record []byte, key ed25519.PrivateKey) Signature {
	return Signature{
		Key:       base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, message(record))),
	}
}

// Add puts s into the file, replacing an earlier signature by the same key.
func (f *File) Add(s Signature) {
	for i := range f.Signatures {
		if f.Signatures[i].Key == s.Key {
			f.Signatures[i] = s
			return
		}
	}
	f.Signatures = append(f.Signatures, s)
}

// Marshal returns the file's bytes.
func (f *File) Marshal() []byte {
	data, _ := json.MarshalIndent(f, "", "  ") // cannot fail: strings only
	return append(data, '\n')
}

// Parse reads a signature file. Entries must be well-formed; whether they
// verify is Verify's business.
func Parse(data []byte) (*File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse signature file: %w", err)
	}
	for i, s := range f.Signatures {
		k, err := base64.StdEncoding.DecodeString(s.Key)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("parse signature file: entry %d: key is not a base64 ed25519 public key", i)
		}
		sig, err := base64.StdEncoding.DecodeString(s.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("parse signature file: entry %d: signature is not a base64 ed25519 signature", i)
		}
	}
	return &f, nil
}

// Verify checks that record carries a valid signature by one of keys and
// returns that key. sigFile is the commit's signature file, nil when it has
// none. A signature by a trusted key that does not verify is an error even
// if another trusted key's signature does: it means something was changed.
func Verify(record, sigFile []byte, keys []ed25519.PublicKey) (ed25519.PublicKey, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	if sigFile == nil {
		return nil, ErrUnsigned
	}
	f, err := Parse(sigFile)
	if err != nil {
		return nil, err
	}
	if len(f.Signatures) == 0 {
		return nil, ErrUnsigned
	}
	var good ed25519.PublicKey
	var others []string
	for _, s := range f.Signatures {
		k, _ := base64.StdEncoding.DecodeString(s.Key)
		sig, _ := base64.StdEncoding.DecodeString(s.Signature)
		pub := ed25519.PublicKey(k)
		if !trusted(pub, keys) {
			others = append(others, KeyID(pub))
			continue
		}
		if !ed25519.Verify(pub, message(record), sig) {
			return nil, fmt.Errorf("key %s: %w", KeyID(pub), ErrBadSignature)
		}
		good = pub
	}
	if good == nil {
		return nil, fmt.Errorf("%w (signed by %s; trusted: %s)", ErrUntrusted, strings.Join(others, ", "), keyList(keys))
	}
	return good, nil
}

func trusted(pub ed25519.PublicKey, keys []ed25519.PublicKey) bool {
	for _, k := range keys {
		if pub.Equal(k) {
			return true
		}
	}
	return false
}

func keyList(keys []ed25519.PublicKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = KeyID(k)
	}
	return strings.Join(ids, ", ")
}

// GenerateKey makes a new key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
}

// MarshalPrivateKey returns a key as a PEM "PRIVATE KEY" (PKCS#8) block.
func MarshalPrivateKey(key ed25519.PrivateKey) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(key) // cannot fail for ed25519
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// MarshalPublicKey returns a key as a PEM "PUBLIC KEY" (PKIX) block.
func MarshalPublicKey(key ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(key) // cannot fail for ed25519
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// LoadPrivateKey reads a PEM PKCS#8 ed25519 private key file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM \"PRIVATE KEY\" file", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, not an ed25519 key", path, k)
	}
	return priv, nil
}

// ParsePublicKey reads a trusted key: "ed25519:<base64 raw key>", or the
// path of a PEM "PUBLIC KEY" file (a private key file is accepted too, and
// its public half used).
func ParsePublicKey(spec string) (ed25519.PublicKey, error) {
	if b64, ok := strings.CutPrefix(spec, "ed25519:"); ok {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: not the base64 of a 32-byte ed25519 public key", spec)
		}
		return ed25519.PublicKey(k), nil
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("public key %s: not a PEM file", spec)
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", spec, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key %s: a %T, not an ed25519 key", spec, k)
		}
		return pub, nil
	case "PRIVATE KEY":
		priv, err := LoadPrivateKey(spec)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("public key %s: PEM block %q, expected \"PUBLIC KEY\"", spec, block.Type)
}

// ParsePublicKeys parses a list of trusted keys (see ParsePublicKey).
func ParsePublicKeys(specs []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, s := range specs {
		k, err := ParsePublicKey(s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}
