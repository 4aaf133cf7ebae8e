package initboot

import (
	"encoding/json"

	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

// BootRecordPath is where cfs-init leaves its boot record, relative to
// /run; `cfs-deploy status` reads it (sysroot.BootRecordPath) to tell
// which deployment is running.
const BootRecordPath = "cfs-deploy/booted.json"

// BootRecord and its parts are the sysroot package's contract.
type (
	BootRecord = sysroot.BootRecord
	Timing     = sysroot.Timing
	StepTime   = sysroot.StepTime
)

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
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// summary is the one line always printed when the boot goes ahead.
func recordSummary(r *BootRecord) string {
	sec := ""
	if r.Insecure {
		sec = ", INSECURE (no kernel-enforced fs-verity)"
	}
	return fmt.Sprintf("booting composefs image %s from %s%s: own work %s, %s since cfs-init started, %s since kernel start",
		r.Digest, r.Device, sec, fmtDuration(msDur(r.Timings.Own)),
		fmtDuration(msDur(r.Timings.SinceInit)), fmtDuration(msDur(r.Timings.SinceKernel)))
}

func msDur(m float64) time.Duration { return time.Duration(m * float64(time.Millisecond)) }
