package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/oci"
	"github.com/cfs-deploy/cfs-deploy/internal/pull"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
)

func init() {
	register("pull", command{
		summary: "fetch a branch from a published repository, or a container image",
		run:     runPull,
		usage: usageText(`Usage: cfs-deploy pull [OPTIONS] URL|PATH|REMOTE BRANCH
       cfs-deploy pull [OPTIONS] docker://IMAGE|oci:DIR[:TAG]|oci-archive:FILE[:TAG] BRANCH

From a repository published as static files (http://, https://, file://,
a plain path, or a [remote.NAME] of the configuration): fetches BRANCH's
tip commit (and parents, --depth), its image and every object the local
repository lacks, --jobs at once. Each file is checked against its
fs-verity digest as it arrives and stored only if it matches; failures
are retried with backoff, broken transfers continue where they stopped,
and a pull run again after an interruption fetches only what is missing.
The local branch (--as, default BRANCH) moves last, once everything is
there. A tip older than the local branch's is refused (a replayed old
commit) unless --allow-downgrade.

With trusted keys (--verify-key, or the remote's verify-keys), the tip must
carry a valid signature by one of them; otherwise the pull stops before
any object is fetched. Signatures are kept with the commit.

From a container image (docker:// registry, oci: layout directory,
oci-archive: file; a linux/amd64 image is picked from a multi-arch index):
downloads the layers it has not applied before, applies them in order
with OCI whiteout rules, stores the files as objects and commits the tree
to BRANCH, recording the image reference and manifest digest. Registries
on localhost/127.0.0.1 are reached over plain HTTP; --insecure-registry
allows that for others. Credentials come from ~/.docker/config.json (and
podman's auth.json), as for docker and skopeo.

Options:
  --as NAME             the local branch (default: BRANCH)
  --depth N             commits of history to fetch (default 1)
  --jobs N              parallel transfers (default 8 objects, 3 layers)
  --verify-key KEY      a trusted key: a public key file or ed25519:BASE64
                        (repeatable; added to the remote's verify-keys)
  --allow-downgrade     accept a tip older than the local branch's
  --insecure-registry   allow plain HTTP to the registry
  --prepare-os          prepare an image's tree as a deployable OS, as
                        commit --prepare-os does
  --json                print the result as JSON (no progress)`),
	})
	register("push", command{
		summary: "write a commit to a registry as a one-layer container image",
		run:     runPush,
		usage: usageText(`Usage: cfs-deploy push [--insecure-registry] [--json] docker://IMAGE|oci:DIR[:TAG] BRANCH|COMMIT

Writes the commit's tree as a one-layer OCI image for linux/amd64 (a gzip
tar with PAX headers: xattrs, nanosecond times, hard links, devices),
created at the commit's time, with the commit id and image digest as
manifest annotations. "cfs-deploy pull" of it on a host gives a commit
with the same image digest (the same composefs= argument). A file whose
name starts with ".wh." cannot be pushed: image readers take it for a
whiteout.`),
	})
}

func runPull(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	as := fs.String("as", "", "")
	depth := fs.Int("depth", 1, "")
	jobs := fs.Int("jobs", 0, "")
	downgrade := fs.Bool("allow-downgrade", false, "")
	insecureReg := fs.Bool("insecure-registry", false, "")
	asJSON := fs.Bool("json", false, "")
	prepareOS := fs.Bool("prepare-os", false, "")
	var keySpecs stringList
	fs.Var(&keySpecs, "verify-key", "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 2 {
		return cliutil.Usagef("give the remote (URL, path, image or configured name) and the branch")
	}
	if *depth < 1 {
		return cliutil.Usagef("--depth must be at least 1")
	}
	if *jobs < 0 || isSet(fs, "jobs") && *jobs == 0 {
		return cliutil.Usagef("--jobs must be positive")
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	remote, branch := ops[0], ops[1]
	if rc, ok := cfg.Remotes[remote]; ok {
		remote = rc.URL
		keySpecs = append(stringList(rc.VerifyKeys), keySpecs...)
	}
	keys, err := sign.ParsePublicKeys(keySpecs)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := repo.Open(cfg.Repo, repo.OpenOptions{})
	if err != nil {
		return err
	}
	defer r.Close()
	show := isTerminal(os.Stderr) && !*asJSON

	if oci.IsImageRef(remote) {
		if *as != "" {
			return cliutil.Usagef("--as is for repositories; for an image BRANCH is the local branch")
		}
		if len(keys) > 0 {
			return fmt.Errorf("%s is a container image: it carries no cfs-deploy commit signature to check against verify-keys (sign the commits of a published repository instead)", remote)
		}
		opts := oci.PullOptions{Ref: remote, Branch: branch, Jobs: *jobs, Access: oci.Access{Insecure: *insecureReg}}
		if *prepareOS {
			opts.Prepare = prepareOSHook(r)
		}
		return pullImage(ctx, r, opts, show, *asJSON)
	}
	if *insecureReg {
		return cliutil.Usagef("--insecure-registry is for docker:// images")
	}
	if *prepareOS {
		return cliutil.Usagef("--prepare-os is for container images: a published repository's commits are fetched as they were made")
	}
	opts := pull.Options{Remote: remote, Branch: branch, Local: *as, Depth: *depth, Jobs: *jobs,
		VerifyKeys: keys, AllowDowngrade: *downgrade}
	var bar *progress
	if show {
		bar = newProgress("pulling")
		opts.Progress = func(p pull.Progress) { bar.line(pullLine(p)) }
	}
	res, err := pull.Pull(ctx, r, opts)
	bar.done()
	if err != nil {
		return pullError(err, res)
	}
	if *asJSON {
		return printJSON(res)
	}
	fmt.Printf("commit %s\nimage  %s\n", res.Commit, res.Image)
	if res.UpToDate {
		fmt.Fprintf(os.Stderr, "%s is up to date with %s %s\n", res.Local, res.Remote, res.Branch)
		return nil
	}
	signed := ""
	if res.SignedBy != "" {
		signed = ", signed by key " + res.SignedBy
	}
	fmt.Fprintf(os.Stderr, "pulled %s %s into %s: %d commit(s), %d of %d objects fetched (%s), %s received in %.2fs (%s/s), %d retries%s\n",
		res.Remote, res.Branch, res.Local, res.Commits, res.Fetched, res.Objects, humanBytes(res.ObjectBytes),
		humanBytes(res.Bytes), res.Seconds, humanBytes(int64(float64(res.Bytes)/max(res.Seconds, 1e-3))), res.Retries, signed)
	return nil
}

// pullError adds advice to a failed pull.
func pullError(err error, res *pull.Result) error {
	switch {
	case errors.Is(err, sign.ErrUnsigned), errors.Is(err, sign.ErrUntrusted), errors.Is(err, sign.ErrBadSignature):
		return fmt.Errorf("%w\n(the local branch was not changed; check the remote's signing key against verify-keys)", err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted; the local branch was not changed, and a new pull fetches only what is still missing")
	}
	if res != nil && res.Fetched > 0 {
		return fmt.Errorf("%w\n(the local branch was not changed; objects fetched so far are kept, so running pull again continues)", err)
	}
	return err
}

func pullLine(p pull.Progress) string {
	if p.Phase != "objects" {
		return fmt.Sprintf("%s, %s", p.Phase, humanBytes(p.BytesDone))
	}
	rate := float64(p.BytesDone) / max(p.Elapsed.Seconds(), 1e-3)
	eta := "?"
	if rate > 0 && p.Bytes > 0 {
		left := max(p.Bytes-p.BytesDone, 0)
		eta = (time.Duration(float64(left)/rate*1e9) + time.Second/2).Truncate(time.Second).String()
	}
	return fmt.Sprintf("%d/%d objects, %s/%s, %s/s, ETA %s", p.ObjectsDone, p.Objects,
		humanBytes(p.BytesDone), humanBytes(p.Bytes), humanBytes(int64(rate)), eta)
}

func pullImage(ctx context.Context, r *repo.Repo, opts oci.PullOptions, show, asJSON bool) error {
	var bar *progress
	if show {
		bar = newProgress("pulling")
		opts.Progress = func(p oci.Progress) {
			rate := float64(p.BytesDone) / max(p.Elapsed.Seconds(), 1e-3)
			bar.line(fmt.Sprintf("%d/%d layers, %s/%s, %s/s", p.LayersDone, p.Layers,
				humanBytes(p.BytesDone), humanBytes(p.Bytes), humanBytes(int64(rate))))
		}
	}
	res, err := oci.Pull(ctx, r, opts)
	bar.done()
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if asJSON {
		return printJSON(res)
	}
	fmt.Printf("commit %s\nimage  %s\n", res.Commit, res.Image)
	if res.UpToDate {
		fmt.Fprintf(os.Stderr, "%s is up to date with %s (%s)\n", opts.Branch, res.Reference, res.Manifest)
		return nil
	}
	fmt.Fprintf(os.Stderr, "pulled %s (%s) into %s: %d of %d layers downloaded (%s), %d objects (%d new), in %.2fs\n",
		res.Reference, res.Manifest, opts.Branch, res.LayersFetched, res.Layers, humanBytes(res.Bytes), res.Objects, res.NewObjects, res.Seconds)
	return nil
}

func runPush(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	insecureReg := fs.Bool("insecure-registry", false, "")
	asJSON := fs.Bool("json", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 2 {
		return cliutil.Usagef("give the destination image and the commit")
	}
	if !oci.IsImageRef(ops[0]) {
		return cliutil.Usagef("%q: the destination is docker://IMAGE or oci:DIR[:TAG]", ops[0])
	}
	r, _, err := openRepo(repo.OpenOptions{}, true)
	if err != nil {
		return err
	}
	defer r.Close()
	id, err := r.Resolve(ops[1])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := oci.Push(ctx, r, id, oci.PushOptions{Ref: ops[0], Access: oci.Access{Insecure: *insecureReg}})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(res)
	}
	fmt.Printf("manifest %s\nlayer    %s (%s)\nimage    %s\n", res.Manifest, res.Layer, humanBytes(res.LayerSize), res.Image)
	return nil
}
