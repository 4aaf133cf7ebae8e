package initboot

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// BootRecordPath is where cfs-init leaves its BootRecord, relative to
// /run; `cfs-deploy status` reads it to tell which deployment is running.
const BootRecordPath = "cfs-deploy/booted.json"

// BootRecord says what cfs-init booted and how long it took. Paths are as
// they are seen from the booted system.
type BootRecord struct {
	Mode     string `json:"mode"`     // "pid1" or "setup-root"
	Digest   string `json:"digest"`   // the image's fs-verity digest
	Arg      string `json:"arg"`      // the kernel argument it came from
	Insecure bool   `json:"insecure"` // composefs=?: no kernel-enforced verity
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

// waitSteps are the steps whose time is not cfs-init's own work.
var waitSteps = []string{"modules", "wait-root"}

// timing fills in the times from the log.
func (l *Log) timing() Timing {
	now := l.now()
	t := Timing{
		InitStart:   ms(l.start),
		SinceKernel: ms(now),
		SinceInit:   ms(now - l.start),
		Steps:       l.Steps(),
	}
	t.Own = ms(now - l.start - l.stepTotal(waitSteps...))
	return t
}

// writeBootRecord writes r as JSON to runDir/cfs-deploy/booted.json.
func writeBootRecord(runDir string, r *BootRecord) error {
	p := filepath.Join(runDir, BootRecordPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, r.marshal(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// summary is the one line always printed when the boot goes ahead.
func (r *BootRecord) summary() string {
	sec := ""
	if r.Insecure {
		sec = ", INSECURE (no kernel-enforced fs-verity)"
	}
	return fmt.Sprintf("booting composefs image %s from %s%s: own work %s, %s since cfs-init started, %s since kernel start",
		r.Digest, r.Device, sec, fmtDuration(msDur(r.Timings.Own)),
		fmtDuration(msDur(r.Timings.SinceInit)), fmtDuration(msDur(r.Timings.SinceKernel)))
}

func msDur(m float64) time.Duration { return time.Duration(m * float64(time.Millisecond)) }
