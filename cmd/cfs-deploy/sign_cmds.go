package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
)

func init() {
	register("keygen", command{
		summary: "make an ed25519 key pair for signing commits",
		run:     runKeygen,
		usage: usageText(`Usage: cfs-deploy keygen [--force] [--json] FILE

Writes a new ed25519 private key to FILE (mode 0600, PEM PKCS#8, as
"openssl genpkey -algorithm ed25519" writes) and its public key to
FILE.pub (PEM). Prints the key id and the public key in the form a
configuration file's verify-keys accepts ("ed25519:BASE64"); the path
of FILE.pub works there as well. Keep FILE on the build machine only.
Existing files are not overwritten unless --force is given.`),
	})
	register("sign", command{
		summary: "sign a commit with an ed25519 key",
		run:     runSign,
		usage: usageText(`Usage: cfs-deploy sign --key FILE BRANCH|COMMIT

Adds a signature by the private key in FILE to the commit's signature file
(commits/<id>.sig, published with the repository), keeping signatures by
other keys. "commit --sign-key FILE" signs a new commit before its branch
moves. See docs/remotes.md for the format.`),
	})
}

func runKeygen(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	force := fs.Bool("force", false, "")
	asJSON := fs.Bool("json", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return cliutil.Usagef("give the private key file to write")
	}
	path := ops[0]
	key, err := sign.GenerateKey()
	if err != nil {
		return err
	}
	pub := key.Public().(ed25519.PublicKey)
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{path, sign.MarshalPrivateKey(key), 0o600}, {path + ".pub", sign.MarshalPublicKey(pub), 0o644}} {
		if err := writeNew(f.path, f.data, f.mode, flags); err != nil {
			return err
		}
	}
	spec := "ed25519:" + base64.StdEncoding.EncodeToString(pub)
	if *asJSON {
		return printJSON(map[string]string{"private": path, "public": path + ".pub", "key_id": sign.KeyID(pub), "verify_key": spec})
	}
	fmt.Printf("private key %s\npublic key  %s.pub\nkey id      %s\nverify key  %s\n", path, path, sign.KeyID(pub), spec)
	return nil
}

// writeNew writes a key file; a failure leaves no partial file.
func writeNew(path string, data []byte, mode os.FileMode, flags int) error {
	f, err := os.OpenFile(path, flags, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; give --force to replace it", path)
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // --force on a file of another mode
		f.Close()
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func runSign(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	keyFile := fs.String("key", "", "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if *keyFile == "" {
		return cliutil.Usagef("--key is required")
	}
	if len(ops) != 1 {
		return cliutil.Usagef("name one branch or commit")
	}
	key, err := sign.LoadPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	r, _, err := openRepo(repo.OpenOptions{}, true)
	if err != nil {
		return err
	}
	defer r.Close()
	id, err := r.Resolve(ops[0])
	if err != nil {
		return err
	}
	if err := sign.SignCommit(r, id, key); err != nil {
		return err
	}
	fmt.Printf("signed %s with key %s\n", id, sign.KeyID(key.Public().(ed25519.PublicKey)))
	return nil
}
