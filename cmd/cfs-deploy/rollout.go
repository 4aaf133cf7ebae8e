package main

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/config"
	"github.com/cfs-deploy/cfs-deploy/internal/deploy"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func init() {
	register("rollout", command{
		summary: "make a commit bootable and the boot default",
		run:     runRollout,
		usage: usageText(`Usage: cfs-deploy rollout [--sysroot DIR] [--boot DIR] [--root SPEC] [--karg ARG]...
                          [--stateroot NAME] [--keep-rollback N] [--tries N] [--stage]
                          [--cfs-init PATH] [--modules LIST] [--module NAME]...
                          [--insecure] [--json] BRANCH|COMMIT

Makes a commit a new deployment and the boot loader's default; the earlier
default becomes the rollback deployment:
  - state/deploy/<image digest>/etc is the new image's /etc with the local
    changes of the merge deployment carried over (the booted deployment, else
    the default of the stateroot): locally modified, added and deleted files
    stay as the admin left them, untouched files follow the new image;
  - state/os/<stateroot>/var is seeded from the image's /var the first time,
    and never touched again;
  - the kernel, and the commit's initramfs.img or one built from its modules
    with cfs-init (reused when kernel, module set and cfs-init are
    unchanged), go to <boot>/cfs-deploy/; the built one loads only what
    the sysroot's disk and file system need (found in sysfs; a warning
    says when they cannot be found and a broader set is used);
  - a boot entry <boot>/loader/entries/cfs-deploy-<image>.conf boots it with
    root=SPEC rw composefs=<digest> plus the kernel arguments of the merge
    deployment and --karg; its sort-key and version put it first.
An image that is deployed already is moved to the front with its /etc as it
is.
With --tries N the entry is counted (NAME+N.conf, BLS boot assessment):
systemd-boot tries it N times and then falls back to the previous default
by itself, unless a boot runs "cfs-deploy mark-good" first.
With --stage (running system only) everything but the entry is prepared
now; "cfs-deploy finalize", run at shutdown by cfs-deploy-finalize.service,
merges /etc again with the edits made since and makes it the default. A
crash before finalize keeps the old default. Afterwards retention removes deployments beyond the default, the booted
one, the pinned ones and --keep-rollback more.
The commit's image and every object it references must be present (and
carry fs-verity in a secure repository). A repository without fs-verity
is only rolled out with --insecure; its entry then says composefs=?<digest>
and the booted root is not protected by verity=require.
Everything an entry needs is on disk before the entry appears; on failure
what the rollout created is removed again.

Options:
` + hostOptionsHelp + `
  --root SPEC       root= value (default: the merge deployment's, else UUID= of
                    the sysroot's file system)
  --karg ARG        another kernel argument (repeatable)
  --stateroot NAME  which /var to use (default: the merge deployment's, else
                    "default")
  --keep-rollback N deployments after the default that retention keeps
                    (default: [deploy] keep-rollback in config.toml, else 1)
  --no-retention    remove no deployment after the rollout
  --tries N         count the new entry's boot tries (default: [deploy]
                    boot-tries in config.toml, else 0: not counted)
  --stage           prepare now, make it the default at shutdown (finalize)
  --cfs-init PATH   init for a built initramfs (default: next to cfs-deploy,
                    else ` + deploy.SystemInit + `)
` + moduleFlagsHelp + `
  --initramfs B     builder of the initramfs when the commit ships none:
                    cfs-init (default: cfs-init as /init, small and fast),
                    dracut (the host's dracut in hostonly mode with the
                    cfs-deploy module, cfs-init setup-root under systemd) or
                    dracut-generic (--no-hostonly); default: [deploy]
                    initramfs in config.toml
  --dracut-module DIR  the cfs-deploy dracut module, if dracut has none installed
  --insecure        allow a repository without fs-verity (see above)
  --json            print the result as JSON`),
	})
}

func runRollout(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	root := fs.String("root", "", "")
	stateroot := fs.String("stateroot", "", "")
	initPath := fs.String("cfs-init", "", "")
	asJSON := fs.Bool("json", false, "")
	insecure := fs.Bool("insecure", false, "")
	keep := fs.Int("keep-rollback", -1, "")
	tries := fs.Int("tries", -1, "")
	stage := fs.Bool("stage", false, "")
	builder := fs.String("initramfs", "", "")
	dracutModule := fs.String("dracut-module", "", "")
	noRetention := fs.Bool("no-retention", false, "")
	var kargs stringList
	fs.Var(&kargs, "karg", "")
	mf := addModuleFlags(fs)
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 1, 1, "name one branch or commit"); err != nil {
		return err
	}
	if isSet(fs, "keep-rollback") && *keep < 0 {
		return cliutil.Usagef("--keep-rollback must be 0 or more")
	}
	if isSet(fs, "tries") && (*tries < 0 || *tries > 1000) {
		return cliutil.Usagef("--tries must be between 0 (not counted) and 1000")
	}
	h, c, err := hf.open(true)
	if err != nil {
		return err
	}
	defer closeHost(h)
	r := h.Repo
	if !*asJSON {
		fmt.Fprintf(os.Stderr, "repository %s (%s)\n", r.Path, r.Mode())
		h.Log = os.Stderr
	}
	signers, err := requiredSigners(c)
	if err != nil {
		return err
	}
	var checkCommit func(verity.Digest) error
	if signers != nil {
		checkCommit = func(id verity.Digest) error {
			k, err := sign.VerifyCommit(r, id, signers)
			if err != nil {
				return fmt.Errorf("refusing to roll out: %w (deploy.require-signature is set in %s)", err, c.Source)
			}
			if !*asJSON {
				fmt.Fprintf(os.Stderr, "commit %s is signed by key %s\n", id, sign.KeyID(k))
			}
			return nil
		}
	}
	keepRollback := c.Deploy.KeepRollback
	if *keep >= 0 {
		keepRollback = *keep
	}
	bootTries := c.Deploy.BootTries
	if *tries >= 0 {
		bootTries = *tries
	}
	res, err := h.Rollout(deploy.Options{
		Ref: ops[0], Stateroot: *stateroot, Root: *root, Kargs: kargs, Init: *initPath,
		Modules: mf.extra, ModuleSet: mf.replace(c),
		AllowInsecure: *insecure, KeepRollback: &keepRollback, NoRetention: *noRetention,
		Tries: bootTries, Stage: *stage, Initramfs: firstNonEmpty(*builder, c.Deploy.Initramfs), DracutModule: *dracutModule,
		CheckCommit: checkCommit,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(res)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", prog, w)
	}
	for _, rm := range res.Removed {
		fmt.Fprintf(os.Stderr, "retention: removed deployment %s (entry %s, %d boot files)\n", short(rm.Image.String()), rm.Entry, len(rm.Files))
	}
	if !res.Discarded.IsZero() {
		fmt.Fprintf(os.Stderr, "discarded the staged deployment %s\n", short(res.Discarded.String()))
	}
	if res.Staged {
		fmt.Printf("staged %s: it becomes the default when \"cfs-deploy finalize\" runs at shutdown\n", short(res.Image.String()))
		if err := startFinalizeUnit(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: warning: %v; run \"cfs-deploy finalize\" before the system stops, or the staged deployment is lost\n", prog, err)
		}
	}
	if res.Merge != nil {
		fmt.Printf("%s (from deployment %s)\n", res.Merge.String(), short(res.MergedFrom.String()))
	} else if !res.StateCreated {
		fmt.Printf("image %s was deployed already: moved to the front, its /etc kept\n", short(res.Image.String()))
	}
	fmt.Printf("entry     %s\nkernel    %s\ninitramfs %s\ncmdline   %s\n", res.Entry, res.Kernel, res.Initramfs, res.Cmdline)
	return nil
}

// finalizeUnit runs "cfs-deploy finalize" when it stops, i.e. at shutdown.
const finalizeUnit = "cfs-deploy-finalize.service"

// startFinalizeUnit starts the unit that finalizes a staged deployment at
// shutdown, on a system that runs systemd. Elsewhere the init system must
// run "cfs-deploy finalize" itself; that is not an error.
func startFinalizeUnit() error {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return nil
	}
	out, err := exec.Command("systemctl", "start", finalizeUnit).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl start %s: %v: %s", finalizeUnit, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
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
