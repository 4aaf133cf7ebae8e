// Package sysroot owns the on-disk contract of a physical root that holds
// cfs-deploy deployments: where each deployment keeps its state, where a
// stateroot's /var lives, how the boot directory is laid out, what
// cfs-init records about the boot, and which deployments exist. The deploy
// side, cfs-init and the repository's garbage collector all go through it,
// so the layout is spelled once.
//
//	<sysroot>/composefs/                          the repository
//	<sysroot>/state/lock                          flock held by every writer
//	<sysroot>/state/boot                          where the boot directory is (one line)
//	<sysroot>/state/finalize-failed.json          why the last finalize failed
//	<sysroot>/state/deploy/<image digest>/etc     a deployment's /etc
//	<sysroot>/state/deploy/<image digest>/origin.json
//	<sysroot>/state/deploy/<image digest>/stateroot   its stateroot's name (for cfs-init)
//	<sysroot>/state/deploy/<image digest>/pinned      present: retention never removes it
//	<sysroot>/state/os/<stateroot>/var            the /var a stateroot's deployments share
//	<boot>/cfs-deploy/                            kernels and initramfs images, named by content
//	<boot>/loader/entries/cfs-deploy-<12 hex>[+N[-M]].conf   one entry per deployment
//	/run/cfs-deploy/booted.json                   what cfs-init booted (the running system)
//	/run/cfs-deploy/staged.json                   the deployment finalize makes the default
//	/run/cfs-deploy/sysroot                       the physical root, as cfs-init mounted it
//	/run/cfs-deploy/image                         the deployment's EROFS image, mounted read-only
//	/run/cfs-deploy/systemd/                      mount units for the booted system, which the
//	                                              cfs-deploy-generator of a prepared tree hands to systemd
//
// A staged deployment is recorded in /run, so that a crash or power cut
// before finalize forgets it: the old default boots, and its state
// directory is a leftover cleanup removes.
//
// The package uses the standard library and internal/verity only, so that
// cfs-init links little.
package sysroot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Paths relative to the sysroot. cfs-init works with them relative to
// where it mounted the physical root.
const (
	RepoDir        = "composefs"
	StateDir       = "state"
	LockFile       = "state/lock"
	BootFile       = "state/boot"
	FinalizeFailed = "state/finalize-failed.json"
	DeployDir      = "state/deploy"
	OSDir          = "state/os"

	OriginFile    = "origin.json"
	StaterootFile = "stateroot"
	PinnedFile    = "pinned"
	EtcDir        = "etc"
)

// Paths relative to the boot directory.
const (
	EntriesDir    = "loader/entries"
	LoaderConf    = "loader/loader.conf"
	BootFilesDir  = "cfs-deploy"
	EntryIDPrefix = "cfs-deploy-"
)

// TempPrefix starts the names of directories being built or removed in
// state/deploy and state/os/<stateroot>; whatever carries it after a
// crash is a leftover that the next writer removes.
const TempPrefix = ".tmp-"

// DefaultStateroot is the stateroot used when none is named.
const DefaultStateroot = "default"

// RunDir holds what concerns the running boot only.
const RunDir = "/run/cfs-deploy"

// Files in RunDir.
const (
	BootRecordFile = "booted.json"
	StagedFile     = "staged.json"
)

// Where cfs-init leaves the mounts the root is made of. They are under
// /run, which moves into the new root whole, so the root's overlay
// options (lowerdir+=ImageMountDir, datadir+=PhysicalRootDir/composefs/
// objects) name paths that exist on the booted system.
const (
	PhysicalRootDir = RunDir + "/sysroot"
	ImageMountDir   = RunDir + "/image"
	// UnitsDir holds systemd units cfs-init writes for the mounts it made
	// (var.mount, the physical root, the image): systemd only learns about
	// them from the mount table otherwise, without the dependencies that
	// order a clean shutdown. cfs-init cannot write to systemd's generator
	// directories (systemd creates them afresh); the cfs-deploy-generator
	// installed by commit --prepare-os copies these into its output.
	UnitsDir = RunDir + "/systemd"
)

// BootRecordPath is where cfs-init records the boot on the booted system.
const BootRecordPath = RunDir + "/" + BootRecordFile

// DeploymentRel is the state directory of the deployment of img, relative
// to the sysroot.
func DeploymentRel(img verity.Digest) string {
	return DeployDir + "/" + img.String()
}

// VarRel is a stateroot's /var, relative to the sysroot.
func VarRel(stateroot string) string {
	return OSDir + "/" + stateroot + "/var"
}

// EntryID is the boot entry ID of the deployment of img: one entry per
// image, so rolling out the same image again rewrites its entry.
func EntryID(img verity.Digest) string { return EntryIDPrefix + img.String()[:12] }

// IsEntryID reports whether id names an entry cfs-deploy writes.
func IsEntryID(id string) bool { return strings.HasPrefix(id, EntryIDPrefix) }

// Sysroot is a physical root and the boot directory its deployments'
// entries live in.
type Sysroot struct {
	Path string // the physical root: holds composefs/ and state/
	Boot string // the boot directory: /boot, an ESP or an XBOOTLDR partition
}

// Join returns a path under the sysroot.
func (s *Sysroot) Join(rel ...string) string {
	return filepath.Join(append([]string{s.Path}, rel...)...)
}

// BootJoin returns a path under the boot directory.
func (s *Sysroot) BootJoin(rel ...string) string {
	return filepath.Join(append([]string{s.Boot}, rel...)...)
}

// Deployment returns the state directory of the deployment of img.
func (s *Sysroot) Deployment(img verity.Digest) string { return s.Join(DeploymentRel(img)) }

// Var returns a stateroot's /var.
func (s *Sysroot) Var(stateroot string) string { return s.Join(VarRel(stateroot)) }

// Entries returns the boot entries directory.
func (s *Sysroot) Entries() string { return s.BootJoin(EntriesDir) }

// CheckStateroot refuses names that cannot be a directory of their own.
func CheckStateroot(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("bad stateroot name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("bad stateroot name %q: use letters, digits, '.', '_', '-'", name)
		}
	}
	return nil
}

// ErrNotSysroot is returned when a directory holds no deployment state.
var ErrNotSysroot = errors.New("not a cfs-deploy sysroot")

// Check reports whether s.Path looks like a sysroot: a directory with a
// repository or a state directory in it.
func (s *Sysroot) Check() error {
	fi, err := os.Stat(s.Path)
	if err != nil {
		return fmt.Errorf("sysroot %s: %w", s.Path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("sysroot %s: not a directory: %w", s.Path, ErrNotSysroot)
	}
	for _, rel := range []string{StateDir, RepoDir} {
		if fi, err := os.Lstat(s.Join(rel)); err == nil && fi.IsDir() {
			return nil
		}
	}
	return fmt.Errorf("sysroot %s has neither %s/ nor %s/: %w", s.Path, RepoDir, StateDir, ErrNotSysroot)
}

// ListDeployed returns the images that have a state directory, i.e. the
// deployments on the sysroot whether or not a boot entry names them yet
// (a staged deployment has none; a crash can leave one without). Names
// that are not digests, including temporaries, are skipped. A missing
// state directory is an empty list.
func (s *Sysroot) ListDeployed() ([]verity.Digest, error) {
	ents, err := os.ReadDir(s.Join(DeployDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	var out []verity.Digest
	for _, e := range ents {
		if d, err := verity.ParseDigest(e.Name()); err == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// MaxStateFile bounds what is read from one state file: records are a few
// hundred bytes, and the root partition is not trusted to keep them so.
const MaxStateFile = 1 << 20

// ReadStateFile reads a small state file without following a symlink at
// its last component and without blocking on a FIFO, refuses anything but
// a regular file, and refuses files larger than max bytes. cfs-init reads
// state from a partition anyone with the disk could have written; a FIFO
// must not hang PID 1 and /dev/zero must not exhaust its memory.
func ReadStateFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link, not a file", path)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s has %d bytes, more than the %d a state file may have", path, fi.Size(), max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s grew beyond %d bytes while it was read", path, max)
	}
	return data, nil
}

// ReadStateroot reads the stateroot name of the deployment in dir from
// its stateroot file; "" when there is none. A name that could not be a
// directory is an error, so that a damaged file cannot point the
// deployment at another path.
func ReadStateroot(dir string) (string, error) {
	p := filepath.Join(dir, StaterootFile)
	data, err := ReadStateFile(p, 256)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	name := strings.TrimSuffix(string(data), "\n")
	if err := CheckStateroot(name); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return name, nil
}

// CheckDirNoSymlinks makes sure that rel, below root, is a directory
// reached without a symbolic link in any component: a state directory
// that is a link could make cfs-init mount something else as /etc.
func CheckDirNoSymlinks(root, rel string) error {
	p := root
	for _, c := range strings.Split(filepath.ToSlash(filepath.Clean(rel)), "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return fmt.Errorf("%s: path leaves the sysroot", rel)
		}
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link; state directories must be real directories", p)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	return nil
}
