package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/deploy"
	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
)

func init() {
	register("initramfs", command{
		summary: "build an initramfs with cfs-init and a kernel's modules",
		run:     runInitramfs,
		usage: usageText(`Usage: cfs-deploy initramfs --root TREE [--kver KVER] -o FILE [--sysroot DIR]
                            [--modules LIST] [--module NAME]...
                            [--cfs-init PATH] [--compress gzip|zstd|none]

Builds a reproducible initramfs (the same inputs give the same bytes): the
cfs-init binary as /init and the kernel modules needed to reach the root
file system, from TREE/usr/lib/modules/KVER (or TREE/lib/modules/KVER),
with their load order worked out in advance. FILE is replaced atomically.

The module set is --modules, else [deploy] modules in config.toml, else
the default set: with --sysroot, the modules for the file system holding
DIR and the drivers of its disk (as rollout builds it), plus erofs,
overlay and loop; without, a broad set for ext4, xfs and btrfs roots on
virtio, SATA/SCSI and NVMe disks. --module adds to the set; a module the
kernel does not have is an error.

Options:
  --root TREE       root of the tree holding the kernel's modules
  --kver KVER       kernel release (default: the only one in TREE)
  -o FILE           where to write the image
  --sysroot DIR     the physical root the image boots: pick the default
                    modules for its file system and disk
` + moduleFlagsHelp + `
  --cfs-init PATH   the init binary (default: cfs-init next to cfs-deploy,
                    else ` + deploy.SystemInit + `)
  --compress ALG    gzip (default), zstd or none`),
	})
}

func runInitramfs(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	root := fs.String("root", "", "")
	kver := fs.String("kver", "", "")
	out := fs.String("o", "", "")
	initPath := fs.String("cfs-init", "", "")
	compress := fs.String("compress", "gzip", "")
	sysrootDir := fs.String("sysroot", "", "")
	mf := addModuleFlags(fs)
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(ops, 0, 0, "initramfs takes no arguments"); err != nil {
		return err
	}
	if *root == "" || *out == "" {
		return cliutil.Usagef("--root and -o are required")
	}
	if fi, err := os.Stat(*root); err != nil || !fi.IsDir() {
		return fmt.Errorf("--root %s: not a directory", *root)
	}
	c, err := loadConfig()
	if err != nil {
		return err
	}
	opts := initramfs.Options{
		KernelVersion: *kver, ModulesTree: *root,
		Modules: mf.replace(c), Extra: mf.extra, Compression: *compress,
	}
	what := "the modules given"
	switch {
	case opts.Modules != nil:
	case *sysrootDir != "":
		var warnings []string
		opts.Default, what, warnings = deploy.DefaultModules(*sysrootDir, "")
		for _, w := range warnings {
			fmt.Fprintf(os.Stderr, "%s: warning: %s\n", prog, w)
		}
	default:
		what = "any ext4, xfs or btrfs root (--sysroot picks the modules for one)"
	}
	if *initPath == "" {
		if *initPath, err = deploy.FindInit(); err != nil {
			return err
		}
	}
	start := time.Now()
	f, err := atomicfile.Create(*out, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	opts.Init = *initPath
	m, err := initramfs.Build(bw, opts)
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := f.Commit(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: %s (%s uncompressed, %s), kernel %s, %d modules for %s", *out,
		humanBytes(m.Size), humanBytes(m.ArchiveSize), m.Compression, m.KernelVersion, len(m.Modules), what)
	if len(m.Builtin) > 0 {
		fmt.Fprintf(os.Stderr, ", %d built in", len(m.Builtin))
	}
	if len(m.Skipped) > 0 {
		fmt.Fprintf(os.Stderr, ", %d not in the kernel %v", len(m.Skipped), m.Skipped)
	}
	fmt.Fprintf(os.Stderr, ", in %.2fs\n", time.Since(start).Seconds())
	return nil
}
