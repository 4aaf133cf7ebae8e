package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/osprep"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
)

func init() {
	register("init", command{
		summary: "create a repository",
		run:     runInit,
		usage: usageText(`Usage: cfs-deploy init [--insecure] [--repo DIR]

Creates a repository. It is secure by default: meta.json and every object
carry fs-verity, so the filesystem must support it (ext4 -O verity, btrfs,
f2fs). --insecure creates a repository that works on any filesystem and
computes digests in userspace; boots from it need composefs=?<digest>.`),
	})
	register("commit", command{
		summary: "commit a directory, tar stream or dump file to a branch",
		run:     runCommit,
		usage: usageText(`Usage: cfs-deploy commit --branch NAME [--subject TEXT] [--version V] [--sign-key FILE]
                         [--json] [--trust-existing] [--prepare-os] SOURCE
       cfs-deploy commit --branch NAME [...] --from-tar FILE|-
       cfs-deploy commit --branch NAME [...] --from-dump FILE

Stores every file larger than 64 bytes as an object (deduplicated against
everything already in the repository), writes the composefs image, records
a commit whose parent is the branch's previous tip, and moves the branch.
--sign-key FILE signs the commit record with that ed25519 private key
(see keygen) before the branch moves.
Prints the commit id and the image digest (the composefs= kernel argument).
A directory SOURCE is read without crossing into other filesystems (like
tar --one-file-system): a mount point inside it is recorded as an empty
directory with the mounted directory's own metadata. Hard links are kept;
symlink targets are stored as they are, absolute ones included.

A tar stream (GNU tar, podman/docker export; xattrs from PAX SCHILY.xattr
or LIBARCHIVE.xattr records) may not reach outside its root: an entry or
hard link target with a ".." component is refused; "/a", "./a" and "a"
are the same entry. A dump file's objects must already be in the
repository, with the sizes the dump gives. A failed commit leaves the
branch where it was.

In a repository without fs-verity nothing vouches for an object already
there, so the commit reads each one it reuses and replaces a damaged copy
(from a directory or tar source; a dump commit is refused).
--trust-existing skips that: much faster for a large unchanged tree, but
damage goes unnoticed until fsck.

--prepare-os commits a stock distribution tree as a deployable OS: the
tree that is committed (never the source) gets /home, /root, /srv, /opt,
/mnt, /usr/local links into /var (/media into /run), their content kept
under /usr/share/factory; a tmpfiles.d snippet that makes their targets
at every boot; a tmpfs on /tmp and no fstab entry for / (a warning says
if one was commented out); dpkg's and rpm's databases moved into /usr;
the systemd generator for cfs-init's units. Preparing a prepared tree
changes nothing. See docs/os-trees.md.`),
	})
	register("log", command{
		summary: "show a branch's history",
		run:     runLog,
		usage:   usageText(`Usage: cfs-deploy log [--json] [-n N] BRANCH|COMMIT`),
	})
	register("show", command{
		summary: "show one commit",
		run:     runShow,
		usage:   usageText(`Usage: cfs-deploy show [--json] COMMIT`),
	})
	register("branches", command{
		summary: "list branches",
		run:     runBranches,
		usage:   usageText(`Usage: cfs-deploy branches [--json]`),
	})
}

func usageText(s string) func(io.Writer) {
	return func(w io.Writer) { fmt.Fprintln(w, s) }
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runInit(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	insecure := fs.Bool("insecure", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 0, 0, "init takes no arguments; name the repository with --repo DIR"); err != nil {
		return err
	}
	c, err := loadConfig()
	if err != nil {
		return err
	}
	if err := repo.Init(c.Repo, repo.InitOptions{Insecure: *insecure}); err != nil {
		return err
	}
	if err := repo.CheckTopDir(c.Repo); errors.Is(err, repo.ErrOpenDirectory) {
		fmt.Fprintf(os.Stderr, "warning: %v; objects are private, but branches and the layout are not (chmod 700 %s)\n", err, c.Repo)
	}
	mode := "secure (fs-verity)"
	if *insecure {
		mode = "insecure (no fs-verity)"
	}
	fmt.Printf("initialised %s repository at %s\n", mode, c.Repo)
	return nil
}

func runCommit(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	branch := fs.String("branch", "", "")
	subject := fs.String("subject", "", "")
	version := fs.String("version", "", "")
	fromTar := fs.String("from-tar", "", "")
	fromDump := fs.String("from-dump", "", "")
	signKey := fs.String("sign-key", "", "")
	asJSON := fs.Bool("json", false, "")
	trust := fs.Bool("trust-existing", false, "")
	prepareOS := fs.Bool("prepare-os", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if *branch == "" {
		return cliutil.Usagef("--branch is required")
	}
	if err := repo.ValidBranchName(*branch); err != nil {
		return cliutil.Usagef("--branch: %v", err)
	}
	sources := len(ops)
	if *fromTar != "" {
		sources++
	}
	if *fromDump != "" {
		sources++
	}
	if sources != 1 {
		return cliutil.Usagef("give exactly one source: a directory, --from-tar or --from-dump")
	}
	opts := repo.CommitOptions{Branch: *branch, Subject: *subject, Version: *version}
	if *signKey != "" {
		// Load the key first: a missing key must not cost a commit.
		key, err := sign.LoadPrivateKey(*signKey)
		if err != nil {
			return err
		}
		opts.Sign = sign.Signer(key)
	}
	r, _, err := openRepo(repo.OpenOptions{TrustExisting: *trust}, *asJSON)
	if err != nil {
		return err
	}
	defer r.Close()
	if *prepareOS {
		opts.Prepare = prepareOSHook(r)
	}
	var prog_ *progress
	if isTerminal(os.Stderr) {
		prog_ = newProgress("committing")
		opts.Progress = prog_.update
	}
	start := time.Now()
	var res *repo.CommitResult
	switch {
	case *fromTar != "":
		res, err = commitStream(*fromTar, func(in io.Reader) (*repo.CommitResult, error) {
			return r.CommitTar(in, *fromTar, opts)
		})
	case *fromDump != "":
		res, err = commitStream(*fromDump, func(in io.Reader) (*repo.CommitResult, error) {
			return r.CommitDump(in, *fromDump, opts)
		})
	default:
		res, err = r.CommitDir(ops[0], opts)
	}
	if err != nil {
		return err
	}
	prog_.done()
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if *asJSON {
		return printJSON(map[string]any{"commit": res.ID.String(), "image": res.Image.String(), "record": res.Commit})
	}
	fmt.Printf("commit %s\nimage  %s\n", res.ID, res.Image)
	st := res.Commit.Stats
	fmt.Fprintf(os.Stderr, "%d entries, %d objects (%d new), %s of content, in %.2fs\n",
		st.Entries, st.Objects, st.NewObjects, humanBytes(st.ContentBytes), time.Since(start).Seconds())
	return nil
}

// prepareOSHook is the commit hook of --prepare-os.
func prepareOSHook(r *repo.Repo) func(*erofs.Node) ([]string, error) {
	return func(root *erofs.Node) ([]string, error) {
		rep, err := osprep.Prepare(root, r)
		if err != nil {
			return nil, err
		}
		return rep.Warnings, nil
	}
}

// commitStream runs commit on the named file, "-" being standard input.
func commitStream(name string, commit func(io.Reader) (*repo.CommitResult, error)) (*repo.CommitResult, error) {
	if name == "-" {
		return commit(os.Stdin)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return commit(f)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func runLog(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	asJSON := fs.Bool("json", false, "")
	max := cliutil.Int(fs, "n", 0, 1, math.MaxInt)
	r, ops, err := openForReading(fs, args, 1, 1, "give one branch or commit")
	if err != nil {
		return err
	}
	defer r.Close()
	id, err := r.Resolve(ops[0])
	if err != nil {
		return err
	}
	ids, commits, err := r.Log(id, max.Value)
	if *asJSON {
		var out []map[string]any
		for i := range ids {
			out = append(out, map[string]any{"id": ids[i].String(), "commit": commits[i]})
		}
		if jerr := printJSON(out); jerr != nil {
			return jerr
		}
		return err
	}
	for i := range ids {
		printCommit(ids[i].String(), commits[i])
		fmt.Println()
	}
	return err
}

func printCommit(id string, c *repo.Commit) {
	fmt.Printf("commit %s\n", id)
	if !c.Parent.IsZero() {
		fmt.Printf("parent %s\n", c.Parent)
	}
	fmt.Printf("date   %s\n", c.Time.Format(time.RFC3339))
	fmt.Printf("image  %s\n", c.Image)
	if c.Version != "" {
		fmt.Printf("version %s\n", c.Version)
	}
	if c.Kernel != nil {
		fmt.Printf("kernel %s\n", c.Kernel.Version)
	}
	if c.Subject != "" {
		fmt.Printf("\n    %s\n", strings.ReplaceAll(c.Subject, "\n", "\n    "))
	}
}

func runShow(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	asJSON := fs.Bool("json", false, "")
	r, ops, err := openForReading(fs, args, 1, 1, "give one commit")
	if err != nil {
		return err
	}
	defer r.Close()
	id, err := r.Resolve(ops[0])
	if err != nil {
		return err
	}
	c, err := r.ReadCommit(id)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(map[string]any{"id": id.String(), "commit": c})
	}
	printCommit(id.String(), c)
	st := c.Stats
	fmt.Printf("\n%d entries, %d objects, %s of content\n", st.Entries, st.Objects, humanBytes(st.ContentBytes))
	if c.Kernel != nil {
		fmt.Printf("vmlinuz   %s\n", c.Kernel.Vmlinuz)
		if !c.Kernel.Initramfs.IsZero() {
			fmt.Printf("initramfs %s\n", c.Kernel.Initramfs)
		}
	}
	return nil
}

func runBranches(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	asJSON := fs.Bool("json", false, "")
	r, _, err := openForReading(fs, args, 0, 0, "branches takes no arguments")
	if err != nil {
		return err
	}
	defer r.Close()
	names, err := r.Branches()
	if err != nil {
		return err
	}
	type entry struct {
		Branch string `json:"branch"`
		Commit string `json:"commit"`
		Image  string `json:"image,omitempty"`
		Time   string `json:"time,omitempty"`
		Error  string `json:"error,omitempty"`
	}
	var out []entry
	for _, n := range names {
		e := entry{Branch: n}
		id, err := r.Branch(n)
		if err != nil {
			e.Error = err.Error()
		} else {
			e.Commit = id.String()
			if c, err := r.ReadCommit(id); err == nil {
				e.Image, e.Time = c.Image.String(), c.Time.Format(time.RFC3339)
			} else {
				e.Error = err.Error()
			}
		}
		out = append(out, e)
	}
	if *asJSON {
		if out == nil {
			out = []entry{}
		}
		return printJSON(out)
	}
	for _, e := range out {
		if e.Error != "" {
			fmt.Printf("%-20s %s (broken: %s)\n", e.Branch, e.Commit, e.Error)
			continue
		}
		fmt.Printf("%-20s %s  %s\n", e.Branch, e.Commit[:12], e.Time)
	}
	return nil
}
