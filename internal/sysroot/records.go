package sysroot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Origin records where a deployment came from. It is written once, when
// the deployment's state directory is created, and describes the commit;
// the kernel arguments live in the boot entry only, so the two can never
// disagree.
type Origin struct {
	Commit    verity.Digest `json:"commit"`
	Branch    string        `json:"branch,omitempty"` // set when the rollout named a branch
	Stateroot string        `json:"stateroot"`
	Image     verity.Digest `json:"image"`
	Kernel    string        `json:"kernel_version"`
	Version   string        `json:"version,omitempty"` // the commit's version
	Subject   string        `json:"subject,omitempty"` // the commit's subject
	Created   time.Time     `json:"created"`
	// MergedFrom is the image of the deployment whose local /etc changes
	// were carried into this one; empty for a first deployment.
	MergedFrom verity.Digest `json:"merged_from,omitzero"`
}

// ReadOrigin reads the origin record in a deployment's state directory.
func ReadOrigin(dir string) (*Origin, error) {
	return readRecord[Origin](filepath.Join(dir, OriginFile))
}

// readRecord reads a JSON state record with ReadStateFile's caution.
func readRecord[T any](path string) (*T, error) {
	data, err := ReadStateFile(path, MaxStateFile)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readOptionalRecord is readRecord for records whose absence means none:
// nil, nil.
func readOptionalRecord[T any](path string) (*T, error) {
	v, err := readRecord[T](path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return v, err
}

// ReadOriginStateroot reads only the stateroot of a deployment's
// origin.json: what cfs-init needs of deployments made before the
// stateroot file existed, without trusting the rest of the record.
func ReadOriginStateroot(dir string) (string, error) {
	o, err := readRecord[struct {
		Stateroot string `json:"stateroot"`
	}](filepath.Join(dir, OriginFile))
	if err != nil {
		return "", err
	}
	if o.Stateroot != "" {
		if err := CheckStateroot(o.Stateroot); err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, OriginFile), err)
		}
	}
	return o.Stateroot, nil
}

// Marshal returns the record as written to origin.json.
func (o *Origin) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// BootRecord says what cfs-init booted and how long it took. Paths are as
// they are seen from the booted system.
type BootRecord struct {
	Mode     string        `json:"mode"`     // "pid1" or "setup-root"
	Digest   verity.Digest `json:"digest"`   // the image's fs-verity digest
	Arg      string        `json:"arg"`      // the kernel argument it came from
	Insecure bool          `json:"insecure"` // composefs=?: no kernel-enforced verity
	// KernelVerity: the kernel measured the image. False for an insecure
	// image whose digest cfs-init computed.
	KernelVerity bool   `json:"kernel_verity"`
	Image        string `json:"image"`      // the image file
	Sysroot      string `json:"sysroot"`    // where the physical root is mounted
	Deployment   string `json:"deployment"` // the deployment's state directory
	StateRoot    string `json:"stateroot"`
	Etc          string `json:"etc"` // what is mounted on /etc
	Var          string `json:"var"` // what is mounted on /var
	Device       string `json:"device"`
	FSType       string `json:"fstype"`
	ReadOnly     bool   `json:"read_only"` // the physical root is mounted read-only
	Init         string `json:"init,omitempty"`
	Timings      Timing `json:"timings"`
}

// Timing holds the boot's times in milliseconds.
type Timing struct {
	// InitStart is the kernel's uptime when cfs-init started.
	InitStart float64 `json:"init_start_ms"`
	// SinceKernel and SinceInit are the uptime, and the time since
	// cfs-init started, when the record was written, just before
	// switching root (or exiting, in setup-root mode).
	SinceKernel float64 `json:"total_since_kernel_ms"`
	SinceInit   float64 `json:"total_since_init_ms"`
	// Own is cfs-init's own work: everything but loading modules and
	// waiting for the root device.
	Own   float64    `json:"own_ms"`
	Steps []StepTime `json:"steps"`
}

// StepTime is how long one step of cfs-init took.
type StepTime struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
}

// ReadBootRecord reads what cfs-init recorded. A missing file wraps
// os.ErrNotExist: the system was not booted by cfs-init.
func ReadBootRecord(path string) (*BootRecord, error) { return readRecord[BootRecord](path) }

// ReadBootDir returns the boot directory rollout recorded for the
// sysroot at path: a path relative to the sysroot, or an absolute one
// (an ESP mounted elsewhere). "" when none is recorded.
func ReadBootDir(path string) (string, error) {
	data, err := ReadStateFile(filepath.Join(path, BootFile), 4096)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	dir := strings.TrimSuffix(string(data), "\n")
	if dir == "" || strings.ContainsAny(dir, "\n\x00") {
		return "", fmt.Errorf("%s: not a directory name", filepath.Join(path, BootFile))
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(path, dir)
	}
	return dir, nil
}

// BootDirRecord returns what ReadBootDir reads back as boot for the
// sysroot at path: relative when the boot directory is inside it, so the
// record holds whether the sysroot is mounted at /sysroot in an installer
// or somewhere else once booted.
func BootDirRecord(path, boot string) string {
	if rel, err := filepath.Rel(path, boot); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel) {
		return rel + "\n"
	}
	return boot + "\n"
}

// Staged is a deployment prepared by `rollout --stage`: its state
// directory and boot files exist, and finalize writes this entry and makes
// it the default. Until then no boot loader sees it.
type Staged struct {
	Image      verity.Digest `json:"image"`
	Commit     verity.Digest `json:"commit"`
	Stateroot  string        `json:"stateroot"`
	MergedFrom verity.Digest `json:"merged_from,omitzero"`
	Created    time.Time     `json:"created"`
	// The entry finalize writes.
	Title   string   `json:"title"`
	Linux   string   `json:"linux"`
	Initrd  []string `json:"initrd"`
	Options string   `json:"options"`
	Tries   int      `json:"tries,omitempty"` // boot counting: tries of the new entry (0: none)
	// Retention finalize applies, as the rollout asked.
	KeepRollback *int `json:"keep_rollback,omitempty"`
	NoRetention  bool `json:"no_retention,omitempty"`
}

// FinalizeFailure is why the last finalize of a staged deployment failed:
// kept on the sysroot so that the next boot's status says it.
type FinalizeFailure struct {
	Time  time.Time     `json:"time"`
	Image verity.Digest `json:"image"`
	Error string        `json:"error"`
}

// ReadFinalizeFailure reads the sysroot's record of a failed finalize;
// nil, nil when there is none.
func ReadFinalizeFailure(path string) (*FinalizeFailure, error) {
	return readOptionalRecord[FinalizeFailure](path)
}

// ReadStaged reads the staged deployment's record at path; nil, nil when
// there is none.
func ReadStaged(path string) (*Staged, error) { return readOptionalRecord[Staged](path) }
