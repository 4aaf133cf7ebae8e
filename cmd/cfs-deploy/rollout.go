package main

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/config"
	"github.com/cfs-deploy/cfs-deploy/internal/deploy"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func init() {
	register("rollout", command{
		summary: "make a commit bootable and the boot default",
		run:     runRollout,
		usage: usageText(`Usage: cfs-deploy rollout [--sysroot DIR] [--boot DIR] [--root SPEC] [--karg ARG]...
                          [--stateroot NAME] [--cfs-init PATH] [--module NAME] [--insecure] [--json]
                          BRANCH|COMMIT

Makes a commit bootable on a sysroot and the boot loader's default:
  - state/deploy/<image digest>/ gets the image's /etc and origin.json,
    unless the deployment exists (its /etc is then kept as it is);
  - state/os/<stateroot>/var is seeded from the image's /var the first
    time, and never touched again;
  - the kernel, and the commit's initramfs.img or one built from its
    modules with cfs-init, go to <boot>/cfs-deploy/ under names derived
    from their content;
  - a boot entry <boot>/loader/entries/cfs-deploy-<image>.conf boots it
    with root=SPEC rw composefs=<digest> and the extra arguments, and
    loader.conf's default names it.
The commit's image and every object it references must be present (and
carry fs-verity in a secure repository). With require-signature = true in
the configuration's [deploy] section, the commit must be signed by one of
the trusted keys (deploy.verify-keys, else the remotes' verify-keys). A repository without fs-verity
is only rolled out with --insecure; its entry then says composefs=?<digest>
and the booted root is not protected by verity=require.
Everything an entry needs is on disk before the entry appears; on failure
what the rollout created is removed again.

Options:
  --sysroot DIR     the physical root holding composefs/ and state/ (default:
                    the repository's parent, /sysroot on a booted system)
  --repo DIR        the repository (default <sysroot>/composefs, else the
                    configured one)
  --boot DIR        the boot directory, /boot or the ESP (default <sysroot>/boot)
  --root SPEC       root= value (default UUID= of the sysroot's file system)
  --karg ARG        another kernel argument (repeatable)
  --stateroot NAME  which /var to use (default "default")
  --cfs-init PATH   init for a built initramfs (default: next to cfs-deploy,
                    else ` + deploy.SystemInit + `)
  --module NAME     another module for a built initramfs (repeatable)
  --insecure        allow a repository without fs-verity (see above)
  --json            print the result as JSON`),
	})
}

func runRollout(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	sysroot := fs.String("sysroot", "", "")
	boot := fs.String("boot", "", "")
	root := fs.String("root", "", "")
	stateroot := fs.String("stateroot", deploy.DefaultStateroot, "")
	initPath := fs.String("cfs-init", "", "")
	asJSON := fs.Bool("json", false, "")
	insecure := fs.Bool("insecure", false, "")
	var kargs, modules stringList
	fs.Var(&kargs, "karg", "")
	fs.Var(&modules, "module", "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return cliutil.Usagef("name one branch or commit")
	}
	// The sysroot is the repository's parent: --sysroot names it, else
	// --repo or the configured repository (/sysroot/composefs on a booted
	// system, where the physical root is mounted at /sysroot).
	repoPath := global.repo
	if repoPath == "" && *sysroot != "" {
		repoPath = filepath.Join(*sysroot, "composefs")
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if repoPath == "" {
		repoPath = cfg.Repo
	}
	signers, err := requiredSigners(cfg)
	if err != nil {
		return err
	}
	r, err := repo.Open(repoPath, repo.OpenOptions{})
	if err != nil {
		return err
	}
	defer r.Close()
	if !*asJSON {
		fmt.Fprintf(os.Stderr, "repository %s (%s)\n", r.Path, r.Mode())
	}
	var checkCommit func(verity.Digest) error
	if signers != nil {
		checkCommit = func(id verity.Digest) error {
			k, err := sign.VerifyCommit(r, id, signers)
			if err != nil {
				return fmt.Errorf("refusing to roll out: %w (deploy.require-signature is set in %s)", err, cfg.Source)
			}
			if !*asJSON {
				fmt.Fprintf(os.Stderr, "commit %s is signed by key %s\n", id, sign.KeyID(k))
			}
			return nil
		}
	}
	var log io.Writer = os.Stderr
	if *asJSON {
		log = nil
	}
	res, err := deploy.Rollout(deploy.Options{
		Repo: r, Sysroot: *sysroot, BootDir: *boot, Ref: ops[0], Stateroot: *stateroot,
		Root: *root, Kargs: kargs, Init: *initPath, Modules: modules, Log: log,
		AllowInsecure: *insecure, CheckCommit: checkCommit,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(res)
	}
	fmt.Printf("entry     %s\nkernel    %s\ninitramfs %s\ncmdline   %s\n", res.Entry, res.Kernel, res.Initramfs, res.Cmdline)
	return nil
}

// requiredSigners returns the keys rollout checks commits against when
// [deploy] require-signature is set, nil when it is not.
func requiredSigners(cfg config.Config) ([]ed25519.PublicKey, error) {
	if !cfg.Deploy.RequireSignature {
		return nil, nil
	}
	keys, err := sign.ParsePublicKeys(cfg.RolloutKeys())
	if err != nil {
		return nil, fmt.Errorf("configuration %s: deploy.require-signature: %w", cfg.Source, err)
	}
	return keys, nil
}
