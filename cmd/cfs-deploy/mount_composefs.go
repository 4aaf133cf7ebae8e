package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/mount"
)

func init() {
	register("mount.composefs", command{
		summary: "mount a composefs image (as mount -t composefs would)",
		run:     runMountComposefs,
		usage:   mountComposefsUsage,
	})
}

func mountComposefsUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: mount.composefs [-t composefs] [-o OPTIONS] IMAGE MOUNTPOINT

Mounts the composefs image IMAGE on MOUNTPOINT: the image as a read-only
EROFS filesystem under an overlayfs whose data-only layers are the object
directories. Installed as /sbin/mount.composefs it serves
"mount -t composefs IMAGE MOUNTPOINT -o basedir=...".

Options (comma-separated; a backslash makes the next character literal):
  basedir=DIR[:DIR...]  object directories holding the file contents (required)
  digest=HEX            the image's expected fs-verity digest, checked with
                        the kernel before mounting; implies verity
  verity                require fs-verity on every file (overlay verity=require)
  noverity              do not require it, even with digest=
  tryverity             require it if the kernel knows the option
  upperdir=DIR          writable upper layer (with workdir=)
  workdir=DIR           overlayfs work directory, on the upper's filesystem
  idmap=PATH            idmap the image through this user namespace file
                        (for example /proc/PID/ns/user)
  ro, rw                mount read-only (the default without upperdir) or not
  nosuid, nodev, noexec the usual mount flags

Flags mount(8) passes to helpers: -s (ignore unknown options), -f (check
everything but mount nothing), -n (ignored), -v (say what was mounted).
`)
}

func runMountComposefs(prog string, args []string) error {
	h, err := mount.ParseHelperArgs(args)
	if err != nil {
		return cliutil.Usagef("%v", err)
	}
	if h.Help {
		return flag.ErrHelp
	}
	if h.Verbose {
		h.Options.Logf = stdoutf
	}
	if h.Fake {
		if h.Verbose {
			fmt.Printf("%s: would mount %s on %s\n", prog, h.Options.Image, h.Target)
		}
		return nil
	}
	if err := mount.Mount(h.Target, h.Options); err != nil {
		return err
	}
	if h.Verbose {
		fmt.Printf("%s: mounted %s on %s\n", prog, h.Options.Image, h.Target)
	}
	return nil
}
