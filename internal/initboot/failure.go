package initboot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// bootError is a failure already explained in words an operator can act
// on; its text is used as it is.
type bootError struct {
	msg string
	err error
}

func (e *bootError) Error() string { return e.msg }
func (e *bootError) Unwrap() error { return e.err }

// stepError names the step that failed, for errors that do not explain
// themselves.
type stepError struct {
	step string // "mount the root file system"
	err  error
}

func (e *stepError) Error() string { return "cannot " + e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// during wraps err, unless it is nil or already explained.
func during(step string, err error) error {
	if err == nil {
		return nil
	}
	var be *bootError
	if errors.As(err, &be) {
		return err
	}
	return &stepError{step: step, err: err}
}

// FailureText is the paragraph printed when the boot stops: what failed
// and why, in one piece. moduleErr, if not nil, is added because a module
// that failed to load is often the real cause of what went wrong later.
func FailureText(err error, moduleErr error) string {
	var b strings.Builder
	b.WriteString("refusing to boot: ")
	msg := err.Error()
	b.WriteString(msg)
	if !strings.HasSuffix(msg, ".") {
		b.WriteString(".")
	}
	if moduleErr != nil {
		fmt.Fprintf(&b, " Kernel modules that failed to load earlier: %s.", strings.ReplaceAll(moduleErr.Error(), "\n", "; "))
	}
	return b.String()
}

// failer ends a PID 1 boot that cannot go on. It never returns: PID 1
// exiting would panic the kernel.
type failer struct {
	log       *Log
	plan      *Plan // nil if the command line could not be read
	moduleErr error
	shell     string // emergency shell, if the initramfs has one
}

// fail prints why the boot stopped, then opens the emergency shell when
// asked for and present, and reboots so that the boot loader can fall back
// to another entry.
func (f *failer) fail(err error) {
	defer func() {
		if r := recover(); r != nil {
			f.log.Printf("internal error while handling a failure: %v", r)
			rebootNow(f.log)
		}
	}()
	f.log.Printf("%s", FailureText(err, f.moduleErr))
	delay := DefaultRebootDelay
	emergency := false
	if f.plan != nil {
		delay, emergency = f.plan.RebootDelay, f.plan.Emergency
	}
	if emergency {
		if f.shell == "" {
			f.log.Printf("cfs.emergency: no shell any more, the initramfs was already freed")
		} else if _, serr := os.Stat(f.shell); serr == nil {
			f.log.Printf("cfs.emergency: starting %s; the machine reboots when it exits", f.shell)
			cmd := exec.Command(f.shell)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = os.Environ()
			if rerr := cmd.Run(); rerr != nil {
				f.log.Printf("emergency shell: %v", rerr)
			}
			delay = 0
		} else {
			f.log.Printf("cfs.emergency: the initramfs has no %s", f.shell)
		}
	} else {
		f.log.Printf("rebooting in %v so that the boot loader can fall back to another entry (cfs.emergency opens a shell instead)", delay)
	}
	time.Sleep(delay)
	rebootNow(f.log)
}

// rebootNow restarts the machine; if even that fails, it waits for ever,
// which is safer than exiting.
func rebootNow(log *Log) {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	log.Printf("reboot failed: %v; halting here", err)
	for {
		time.Sleep(time.Hour)
	}
}

// panicError turns a recovered panic into an error carrying the stack, so
// a programming error is reported like any other failure.
func panicError(r any) error {
	return fmt.Errorf("internal error (a bug in cfs-init): %v\n%s", r, debug.Stack())
}
