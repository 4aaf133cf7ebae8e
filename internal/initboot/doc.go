// Package initboot is cfs-init: the program that turns a kernel, an
// initramfs and a root device into a running composefs system.
//
// As PID 1 of an initramfs (RunPID1) it mounts /proc, /sys, /dev and /run,
// loads the modules the initramfs carries, waits for the root device named
// by root=, mounts it on /sysroot, checks the composefs image named by
// composefs= against its fs-verity digest, mounts it (EROFS + overlayfs
// with the object store as data-only layer) as the new root, puts the
// deployment's /etc and the OS's /var in place, records what it did in
// /run/cfs-deploy/booted.json and switches root into init.
//
// Inside a systemd initramfs (RunSetupRoot, `cfs-init setup-root`) systemd
// has mounted the physical root already and switches root itself; cfs-init
// only replaces /sysroot with the verified composefs tree.
//
// Nothing unverified is ever booted: every failure ends in one paragraph
// that says what went wrong, then an emergency shell (cfs.emergency) or a
// reboot so that the boot loader can fall back to another entry.
//
// Files by concern: plan.go (kernel command line), log.go, early.go
// (/proc, /sys, /dev, /run), modules.go, blockdev.go, probe.go and
// parttable.go (finding the root device), rootfs.go (waiting for and
// mounting it), image.go (repository and image checks), state.go (/etc and
// /var), assemble.go (the new root, for both modes), switchroot.go,
// failure.go, record.go and json.go (booted.json), pid1.go and setuproot.go
// (the two modes).
package initboot
