// Command cfs-init boots a cfs-deploy host from its initramfs.
//
// As the initramfs's /init (PID 1) it finds the root device, verifies the
// composefs image that composefs= on the kernel command line names, mounts
// it as the new root and switches into it. Run as `cfs-init setup-root`
// (or not as PID 1) inside a systemd initramfs, it only replaces /sysroot
// with the verified composefs tree and leaves switching root to systemd.
// The work is done by package initboot.
package main

import (
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/initboot"
)

func main() {
	if os.Getpid() == 1 && (len(os.Args) < 2 || os.Args[1] != "setup-root") {
		initboot.RunPID1() // never returns
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "setup-root" {
		args = args[1:]
	}
	os.Exit(initboot.RunSetupRoot(args, os.Stderr))
}
