// Package bootcfg reads and writes the boot configuration cfs-deploy owns:
// the kernel command line (parsed the way the kernel itself splits it),
// the composefs image arguments on it, the root device options cfs-init
// needs, Boot Loader Specification type #1 entries with their boot counting
// file names, and systemd-boot's loader.conf.
//
// Files under /boot are replaced atomically (temporary file, fsync, rename,
// fsync of the directory), so a boot loader that runs after a crash sees
// either the old file or the new one.
package bootcfg
