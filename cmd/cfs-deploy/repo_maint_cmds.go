package main

import (
	"flag"
	"fmt"
	"math"
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/mount"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func init() {
	register("fsck", command{
		summary: "verify every object, image, commit and branch",
		run:     runFsck,
		usage: usageText(`Usage: cfs-deploy fsck [--quick] [--json] [--repair SOURCE]

Checks that every object's content matches its name (measured by the
kernel where fs-verity is on, recomputed otherwise; --quick skips
re-reading contents), that every image parses and references only present
objects of the right size, and that every commit and branch resolves.
Lists each problem with its path; exits 1 if there is any.

--repair SOURCE puts back the damaged or missing objects that images need
from a copy of their content: SOURCE is a directory tree or a tar file
("-" for standard input), for example what was committed. Only files of
the right size and digest are used; fsck then checks again and reports
what is left.`),
	})
	register("gc", command{
		summary: "remove what no branch or deployment references",
		run:     runGC,
		usage: usageText(`Usage: cfs-deploy gc [--dry-run] [--depth N] [--json]

Removes objects, images and commits that no branch (down to --depth
commits of history, default from the configuration, 0 = all), no
deployment and no commit in that history references. Waits for running
commits to finish and blocks new ones while it runs.`),
	})
	register("mount", command{
		summary: "mount a commit or image read-only (or with an upper layer)",
		run:     runMount,
		usage: usageText(`Usage: cfs-deploy mount [--upperdir DIR --workdir DIR] [--suid] [--dev]
                        REF|IMAGE-DIGEST MOUNTPOINT

Checks the image's digest, then mounts EROFS + overlayfs with the
repository's objects as the data-only lower layer (verity=require in a
secure repository). Read-only unless an upper layer is given.

The mount is nosuid and nodev: a tree holds setuid-root programs and
device nodes that would otherwise give any user on this system root or
the devices. --suid and --dev allow them, for a tree that is to be run
(chroot, container) by someone who may.`),
	})
}

func runFsck(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	quick := fs.Bool("quick", false, "")
	asJSON := fs.Bool("json", false, "")
	source := fs.String("repair", "", "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 0, 0, "fsck takes no arguments (--repair takes the source)"); err != nil {
		return err
	}
	r, _, err := openRepo(repo.OpenOptions{}, *asJSON)
	if err != nil {
		return err
	}
	defer r.Close()
	rep, err := r.Fsck(repo.FsckOptions{Quick: *quick})
	if err != nil {
		return err
	}
	if *source != "" && rep.Repairable() > 0 {
		fixed, err := repairFrom(r, rep, *source)
		if len(fixed) > 0 {
			fmt.Fprintf(os.Stderr, "repaired %d of %d damaged or missing objects from %s\n", len(fixed), rep.Repairable(), *source)
		}
		if err != nil {
			return err
		}
		if rep, err = r.Fsck(repo.FsckOptions{Quick: *quick}); err != nil {
			return err
		}
	}
	if *asJSON {
		if err := printJSON(rep); err != nil {
			return err
		}
	} else {
		for _, w := range rep.Warnings {
			fmt.Fprintf(os.Stderr, "warning: %s\n", w)
		}
		for _, p := range rep.Problems {
			fmt.Printf("%s: %s\n", p.Path, p.What)
		}
		fmt.Fprintf(os.Stderr, "checked %d objects, %d images, %d commits, %d branches: %d problems\n",
			rep.Objects, rep.Images, rep.Commits, rep.Branches, len(rep.Problems))
		if rep.TempFiles > 0 {
			fmt.Fprintf(os.Stderr, "%d temporary files of interrupted writes (not a problem; gc removes them)\n", rep.TempFiles)
		}
	}
	if len(rep.Problems) > 0 {
		return cliutil.ErrReported // the list said why
	}
	return nil
}

// repairFrom repairs from a directory tree or a tar file ("-": stdin).
func repairFrom(r *repo.Repo, rep *repo.FsckReport, source string) ([]verity.Digest, error) {
	if source == "-" {
		return r.RepairFromTar(rep, os.Stdin, "standard input")
	}
	fi, err := os.Stat(source)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return r.RepairFromDir(rep, source)
	}
	f, err := os.Open(source)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return r.RepairFromTar(rep, f, source)
}

func runGC(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	dry := fs.Bool("dry-run", false, "")
	depth := cliutil.Int(fs, "depth", 0, 0, math.MaxInt)
	asJSON := fs.Bool("json", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 0, 0, "gc takes no arguments"); err != nil {
		return err
	}
	r, c, err := openRepo(repo.OpenOptions{Exclusive: true}, *asJSON)
	if err != nil {
		return err
	}
	defer r.Close()
	d := c.GC.KeepDepth
	if depth.Given {
		d = depth.Value
	}
	rep, err := r.GC(repo.GCOptions{DryRun: *dry, Depth: d})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(rep)
	}
	verb := "removed"
	if *dry {
		verb = "would remove"
	}
	fmt.Printf("%s %d objects (%s), %d images, %d commits, %d temporary files; kept %d objects\n",
		verb, rep.Objects, humanBytes(rep.Bytes), rep.Images, rep.Commits, rep.TempFiles, rep.KeptObjects)
	return nil
}

func runMount(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	upper := fs.String("upperdir", "", "")
	work := fs.String("workdir", "", "")
	suid := fs.Bool("suid", false, "")
	dev := fs.Bool("dev", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 2, 2, "give a ref or image digest and a mount point"); err != nil {
		return err
	}
	if (*upper == "") != (*work == "") {
		return cliutil.Usagef("--upperdir and --workdir go together")
	}
	r, _, err := openRepo(repo.OpenOptions{}, false)
	if err != nil {
		return err
	}
	defer r.Close()
	img, err := resolveImage(r, ops[0])
	if err != nil {
		return err
	}
	opts := mount.Options{
		Image:                r.ImagePath(img),
		ObjectDirs:           []string{r.ObjectsDir()},
		ExpectDigest:         &img,
		AllowUserspaceDigest: !r.Secure,
		RequireVerity:        r.Secure,
		UpperDir:             *upper,
		WorkDir:              *work,
		ReadWrite:            *upper != "",
		NoSuid:               !*suid,
		NoDev:                !*dev,
		Logf:                 stderrf,
	}
	if err := mount.Mount(ops[1], opts); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mounted image %s at %s\n", img, ops[1])
	return nil
}

// resolveImage accepts an image digest the repository holds, or anything
// that names a commit.
func resolveImage(r *repo.Repo, name string) (verity.Digest, error) {
	if d, err := verity.ParseDigest(name); err == nil && r.HasImage(d) {
		return d, nil
	}
	id, err := r.Resolve(name)
	if err != nil {
		return verity.Digest{}, err
	}
	c, err := r.ReadCommit(id)
	if err != nil {
		return verity.Digest{}, err
	}
	return c.Image, nil
}
