package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// This file builds the disk a UEFI boot starts from: a GPT disk image
// whose only partition is an EFI System Partition (FAT32), written and read
// with mtools so that the host mounts nothing and the test sees exactly
// what the firmware and the boot loader left (systemd-boot renames counted
// entries on it).
//
// The root file system is not on this disk: a test attaches it as a second
// virtio disk (the whole-disk ext4 images MakeExt4 makes, and the
// installer's disks, are used as they are). Entries name the root by
// UUID, so the disk order does not matter to cfs-init, and the debugfs
// helpers keep working on the root image without partition offsets.

const (
	// espStart is where the ESP begins: 1 MiB, the usual alignment; mtools
	// reach the file system as image@@1M.
	espStart = 1 << 20
	// espType is the GPT partition type of an EFI System Partition.
	espType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	// gptTail is what the backup GPT takes at the end of the disk.
	gptTail = 33 * 512
	// DefaultESPSizeMB holds several kernels (about 10 MB each in Debian)
	// and cfs-init's or dracut's initramfs images. The image is sparse:
	// its size costs nothing on the host.
	DefaultESPSizeMB = 256
)

// SystemdBootEFI is Debian's systemd-boot binary (package
// systemd-boot-efi).
const SystemdBootEFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// ESPBootPath is where the firmware looks for a boot loader on removable
// media, which needs no boot variables in the firmware's store.
const ESPBootPath = "/EFI/BOOT/BOOTX64.EFI"

// ESPDisk is a GPT disk image holding one EFI System Partition. Paths on
// the ESP are absolute and use '/' ("/loader/entries/a.conf"); FAT
// compares names without regard to case.
type ESPDisk struct {
	Path string // the disk image, to attach to QEMU
}

// ESPConfig says what MakeESPDisk puts on the ESP.
type ESPConfig struct {
	// SizeMB is the partition's size; 0 means DefaultESPSizeMB. FAT32
	// needs at least 33 MB.
	SizeMB int
	// Dir, if set, is a host directory whose tree is copied onto the ESP
	// (regular files and directories; anything else is an error, FAT
	// has no symbolic links).
	Dir string
	// SystemdBoot copies SystemdBootEFI to ESPBootPath, so that the
	// firmware starts systemd-boot by itself.
	SystemdBoot bool
}

// MakeESPDisk creates the disk image in the test's temporary directory: a
// GPT (sfdisk), the ESP formatted FAT32 in place (mkfs.vfat --offset), and
// the files of cfg. It skips the test when the tools are missing (fails
// with RequiredEnv=1).
func MakeESPDisk(t testing.TB, cfg ESPConfig) *ESPDisk {
	t.Helper()
	RequireUEFI(t)
	d, err := NewESPDisk(filepath.Join(t.TempDir(), "esp-disk.img"), cfg.SizeMB)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SystemdBoot {
		if err := d.CopyIn(SystemdBootEFI, ESPBootPath); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Dir != "" {
		if err := d.CopyTree(cfg.Dir, "/"); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// NewESPDisk creates the disk image img with an empty ESP of sizeMB
// (0: DefaultESPSizeMB).
func NewESPDisk(img string, sizeMB int) (*ESPDisk, error) {
	if sizeMB == 0 {
		sizeMB = DefaultESPSizeMB
	}
	if sizeMB < 33 {
		return nil, fmt.Errorf("ESP of %d MB: FAT32 needs at least 33 MB", sizeMB)
	}
	partBytes := int64(sizeMB) << 20
	f, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(espStart + partBytes + gptTail)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", img, err)
	}
	script := fmt.Sprintf("label: gpt\nstart=%d, size=%d, type=%s, name=\"ESP\"\n", espStart/512, partBytes/512, espType)
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sfdisk %s: %v: %s", img, err, bytes.TrimSpace(out))
	}
	// mkfs.vfat counts in 1 KiB blocks; it warns that the image is
	// larger than the file system, which is the point of --offset.
	args := []string{"-F", "32", "-n", "ESP", "--offset", fmt.Sprint(espStart / 512), img, fmt.Sprint(partBytes / 1024)}
	if out, err := exec.Command("mkfs.vfat", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.vfat %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return &ESPDisk{Path: img}, nil
}

// mtools runs one mtools command on the ESP. Drive-less paths ("::/a")
// address the image given with -i.
func (d *ESPDisk) mtools(tool string, args ...string) ([]byte, error) {
	if strings.Contains(d.Path, "@@") {
		return nil, fmt.Errorf("ESP image path %q: mtools cannot take @@ in a file name", d.Path)
	}
	full := append([]string{"-i", fmt.Sprintf("%s@@%d", d.Path, espStart)}, args...)
	cmd := exec.Command(tool, full...)
	// Our geometry is not a floppy's; without this mtools refuses it.
	// An empty MTOOLSRC keeps a host's mtools.conf out of it.
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=/dev/null")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s on %s: %v: %s", tool, strings.Join(args, " "), d.Path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// espPath turns "/loader/a.conf" into mtools' "::/loader/a.conf".
func espPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("ESP path %q: want an absolute path", p)
	}
	return "::" + path.Clean(p), nil
}

// MkdirAll creates the directory dir and its missing parents.
func (d *ESPDisk) MkdirAll(dir string) error {
	dir = path.Clean(dir)
	if dir == "/" {
		return nil
	}
	if isDir, err := d.isDir(dir); err != nil {
		return err
	} else if isDir {
		return nil
	}
	if err := d.MkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	p, err := espPath(dir)
	if err != nil {
		return err
	}
	_, err = d.mtools("mmd", p)
	return err
}

// isDir reports whether dir exists as a directory, listing its parent.
func (d *ESPDisk) isDir(dir string) (bool, error) {
	ents, err := d.ReadDir(path.Dir(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if strings.EqualFold(e.Name, path.Base(dir)) {
			if !e.Dir {
				return false, fmt.Errorf("ESP %s: %s is a file, not a directory", d.Path, dir)
			}
			return true, nil
		}
	}
	return false, nil
}

// ESPDirEntry is one entry of an ESP directory.
type ESPDirEntry struct {
	Name string // the long (VFAT) name, with its case as written
	Dir  bool
}

// ReadDir lists the directory dir, sorted by name. A directory that does
// not exist is an error wrapping fs.ErrNotExist.
func (d *ESPDisk) ReadDir(dir string) ([]ESPDirEntry, error) {
	p, err := espPath(dir)
	if err != nil {
		return nil, err
	}
	// mdir fails with "File ... not found" for a missing directory; an
	// empty one lists nothing.
	out, err := d.mtools("mdir", "-a", "-b", p)
	if err != nil {
		if strings.Contains(err.Error(), "not found") {
			return nil, fmt.Errorf("ESP %s: %s: %w", d.Path, dir, fs.ErrNotExist)
		}
		return nil, err
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	var ents []ESPDirEntry
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			continue
		}
		// mdir -b prints full paths, directories with a trailing '/'.
		rest, ok := strings.CutPrefix(l, prefix)
		if !ok {
			return nil, fmt.Errorf("mdir -b %s printed %q, not a path below it", p, l)
		}
		e := ESPDirEntry{Name: strings.TrimSuffix(rest, "/"), Dir: strings.HasSuffix(rest, "/")}
		if e.Name == "" || strings.Contains(e.Name, "/") {
			return nil, fmt.Errorf("mdir -b %s printed %q", p, l)
		}
		ents = append(ents, e)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return ents, nil
}

// Entries returns the file names in /loader/entries, exactly as they are
// on the ESP (with boot counters such as "+0-1"), sorted.
func (d *ESPDisk) Entries() ([]string, error) {
	ents, err := d.ReadDir("/loader/entries")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.Dir {
			names = append(names, e.Name)
		}
	}
	return names, nil
}

// ReadFile returns the content of the file p.
func (d *ESPDisk) ReadFile(p string) ([]byte, error) {
	src, err := espPath(p)
	if err != nil {
		return nil, err
	}
	// mtype would convert nothing with -r, but mcopy to stdout is the
	// one that is byte-exact in every mtools version.
	return d.mtools("mcopy", "-n", src, "-")
}

// CopyOut copies the file p to the host file dst.
func (d *ESPDisk) CopyOut(p, dst string) error {
	src, err := espPath(p)
	if err != nil {
		return err
	}
	_, err = d.mtools("mcopy", "-n", "-o", src, dst)
	return err
}

// CopyIn copies the host file src to p, replacing a file of that name and
// creating missing directories.
func (d *ESPDisk) CopyIn(src, p string) error {
	dst, err := espPath(p)
	if err != nil {
		return err
	}
	if err := d.MkdirAll(path.Dir(path.Clean(p))); err != nil {
		return err
	}
	// -o overwrites without asking (mtools asks on the terminal
	// otherwise), -n skips the check for a "text" file.
	_, err = d.mtools("mcopy", "-n", "-o", src, dst)
	return err
}

// WriteFile writes data to the file p, replacing it if it exists.
func (d *ESPDisk) WriteFile(p string, data []byte) error {
	tmp, err := os.CreateTemp("", "esp-file-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return d.CopyIn(tmp.Name(), p)
}

// Remove deletes the file p.
func (d *ESPDisk) Remove(p string) error {
	mp, err := espPath(p)
	if err != nil {
		return err
	}
	_, err = d.mtools("mdel", mp)
	return err
}

// Rename renames the file oldPath to newPath in the same directory, as
// systemd-boot and `cfs-deploy mark-good` do with counted entries.
func (d *ESPDisk) Rename(oldPath, newPath string) error {
	if path.Dir(path.Clean(oldPath)) != path.Dir(path.Clean(newPath)) {
		return fmt.Errorf("rename %s to %s: not in the same directory", oldPath, newPath)
	}
	op, err := espPath(oldPath)
	if err != nil {
		return err
	}
	np, err := espPath(newPath)
	if err != nil {
		return err
	}
	_, err = d.mtools("mren", op, np)
	return err
}

// CopyTree copies the host directory tree src into the ESP directory dst:
// directories are created, files replaced. Symbolic links and special
// files are errors, since FAT cannot hold them.
func (d *ESPDisk) CopyTree(src, dst string) error {
	if err := d.MkdirAll(dst); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case e.IsDir():
			if rel == "." {
				return nil
			}
			return d.MkdirAll(target)
		case e.Type().IsRegular():
			return d.CopyIn(p, target)
		default:
			return fmt.Errorf("%s: %v cannot go onto a FAT file system", p, e.Type())
		}
	})
}

// CopyTreeFromExt4 copies the directory srcDir of the ext2/3/4 image img
// (debugfs rdump: the image is not mounted) into the ESP directory dst,
// for example a /boot that `cfs-deploy rollout --boot` wrote on a root
// disk, so that systemd-boot boots what cfs-deploy installed there.
func (d *ESPDisk) CopyTreeFromExt4(img, srcDir, dst string) error {
	tmp, err := os.MkdirTemp("", "esp-rdump-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	srcDir = path.Clean(srcDir)
	if _, err := Debugfs(img, fmt.Sprintf("rdump %s %s", srcDir, tmp)); err != nil {
		return err
	}
	// rdump puts the directory itself into tmp; the root is dumped as
	// its contents.
	from := filepath.Join(tmp, path.Base(srcDir))
	if srcDir == "/" {
		from = tmp
	}
	if _, err := os.Stat(from); err != nil {
		return fmt.Errorf("debugfs rdump %s from %s: %w", srcDir, img, err)
	}
	return d.CopyTree(from, dst)
}

// AppendEntryOptions adds kernel arguments to the options of the entry
// file /loader/entries/<name> (a new options line; systemd-boot joins
// them), keeping its name. Tests add what the console needs
// (console=ttyS0) and their own knobs to entries cfs-deploy wrote.
func (d *ESPDisk) AppendEntryOptions(name string, args ...string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("entry name %q: want a file name in /loader/entries", name)
	}
	p := "/loader/entries/" + name
	text, err := d.ReadFile(p)
	if err != nil {
		return err
	}
	s := string(text)
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return d.WriteFile(p, []byte(s+"options "+strings.Join(args, " ")+"\n"))
}
