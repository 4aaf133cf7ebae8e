package deploy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/filelock"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Host is a sysroot, its boot directory and its repository: what every
// lifecycle verb works on, on the running system or offline.
type Host struct {
	sysroot.Sysroot
	// Repo is the repository in the sysroot. Verbs that only rearrange
	// entries work without one (nil).
	Repo *repo.Repo
	// RunDir holds the running boot's records: cfs-init's booted.json
	// and the staged deployment (default sysroot.RunDir); Cmdline is the
	// kernel command line (default /proc/cmdline). The sysroot is the
	// running system's when the boot record names it.
	RunDir  string
	Cmdline string
	// Log, if set, receives progress lines.
	Log io.Writer
}

// HostOptions say where a Host is.
type HostOptions struct {
	Sysroot string // the physical root (default: the repository's parent)
	// Boot is the boot directory; empty: what rollout recorded in the
	// sysroot, else <sysroot>/boot.
	Boot string
	Repo *repo.Repo
}

// OpenHost finds the sysroot and its boot directory.
func OpenHost(o HostOptions) (*Host, error) {
	h := &Host{Repo: o.Repo}
	h.Path = o.Sysroot
	if h.Path == "" {
		if o.Repo == nil {
			return nil, errors.New("no sysroot and no repository to find it by")
		}
		h.Path = o.Repo.Sysroot()
	}
	if err := h.Check(); err != nil {
		return nil, err
	}
	if o.Repo != nil {
		same, err := sameDir(h.Path, o.Repo.Sysroot())
		if err != nil {
			return nil, err
		}
		if !same {
			return nil, fmt.Errorf("repository %s is not in sysroot %s: gc would not see the deployments and could delete their images", o.Repo.Path, h.Path)
		}
		// cfs-init finds the repository as <root device>/composefs.
		if filepath.Base(filepath.Clean(o.Repo.Path)) != sysroot.RepoDir {
			return nil, fmt.Errorf("repository %s is not named %s: cfs-init looks for <sysroot>/%s and could not boot its deployments", o.Repo.Path, sysroot.RepoDir, sysroot.RepoDir)
		}
	}
	h.Boot = o.Boot
	if h.Boot == "" {
		rec, err := sysroot.ReadBootDir(h.Path)
		if err != nil {
			return nil, err
		}
		h.Boot = rec
	}
	if h.Boot == "" {
		h.Boot = h.Join("boot")
	}
	return h, nil
}

// runPath returns the path of a file in the run directory.
func (h *Host) runPath(name string) string {
	dir := h.RunDir
	if dir == "" {
		dir = sysroot.RunDir
	}
	return filepath.Join(dir, name)
}

func (h *Host) logf(format string, args ...any) {
	if h.Log != nil {
		fmt.Fprintf(h.Log, format+"\n", args...)
	}
}

// lock serialises the verbs that change a sysroot. The lock file lives in
// state/, outside state/deploy, which only holds deployments.
func (h *Host) lock() (func(), error) {
	if err := os.MkdirAll(h.Join(sysroot.StateDir), 0o755); err != nil {
		return nil, err
	}
	return filelock.Exclusive(h.Join(sysroot.LockFile))
}

// lockedDeployments takes the state lock and reads the deployments, the
// start of every verb that changes the sysroot. The caller unlocks.
func (h *Host) lockedDeployments() (*Deployments, func(), error) {
	unlock, err := h.lock()
	if err != nil {
		return nil, nil, err
	}
	ds, err := h.deployments()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return ds, unlock, nil
}

// running returns the image the running system booted from this sysroot,
// and false when the sysroot is not the running system's (an offline
// sysroot, a system not booted by cfs-init, or a record that the kernel
// command line contradicts).
func (h *Host) running() (verity.Digest, bool) {
	rec, err := sysroot.ReadBootRecord(h.runPath(sysroot.BootRecordFile))
	if err != nil {
		return verity.Digest{}, false
	}
	if same, err := sameDir(rec.Sysroot, h.Path); err != nil || !same {
		return verity.Digest{}, false
	}
	d := rec.Digest
	// The record lives in /run; the command line says what this boot
	// really asked for. They agree unless the record is stale.
	cmdPath := h.Cmdline
	if cmdPath == "" {
		cmdPath = "/proc/cmdline"
	}
	if data, err := os.ReadFile(cmdPath); err == nil {
		refs, _ := bootcfg.ComposefsRefs(bootcfg.ParseCmdline(strings.TrimSpace(string(data))))
		found := false
		for _, r := range refs {
			found = found || r.Digest == d
		}
		if !found {
			return verity.Digest{}, false
		}
	}
	return d, true
}
