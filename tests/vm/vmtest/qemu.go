package vmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ConsoleEnv, set to 1, copies every console line to the test's stderr as it
// arrives, for watching a boot live.
const ConsoleEnv = "CFS_DEPLOY_VM_CONSOLE"

// Config describes one boot.
type Config struct {
	Kernel string // bzImage (KernelTree.Vmlinuz)
	Initrd string // initramfs file
	// Append is added to the kernel command line after
	// "console=ttyS0 panic=-1" (a panic reboots, which ends QEMU).
	Append string
	// Disks are raw images attached as virtio-blk in order: /dev/vda,
	// /dev/vdb, ... The guest writes to them.
	Disks    []string
	MemoryMB int           // default 512
	Timeout  time.Duration // for the whole boot, WaitFor and Wait included; default 60s
	QEMUArgs []string      // extra arguments, appended last
}

// VM is a running QEMU. Its serial console is QEMU's standard output; it is
// kept in a log file in the test's temporary directory as it came, and in
// memory without terminal escapes, for WaitFor and Output.
type VM struct {
	t        testing.TB
	cmd      *exec.Cmd
	start    time.Time
	deadline time.Time
	logPath  string
	echo     bool

	mu       sync.Mutex
	output   strings.Builder
	lines    []string        // complete console lines, without line endings
	arrived  []time.Duration // when each line arrived, since start
	next     int             // WaitFor resumes its search here
	changed  chan struct{}   // closed and replaced whenever lines or exit state change
	exited   bool
	exitCode int
	done     chan struct{} // closed once QEMU has exited and its output is read
}

// Boot starts QEMU. The test's cleanup kills it, and if the test failed,
// prints the end of the console log.
func Boot(t testing.TB, cfg Config) *VM {
	t.Helper()
	Require(t)
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 512
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	args := []string{
		"-accel", "tcg", "-cpu", "max", // /dev/kvm is not usable here
		// One vCPU: with two under multi-threaded TCG the kernel's live
		// code patching (int3 breakpoints) has oopsed in early boot,
		// before any of our code ran ("Oops: int3" in sched_clock_cpu).
		"-smp", "1", "-m", fmt.Sprint(cfg.MemoryMB),
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 " + cfg.Append),
	}
	args = append(args, diskArgs(t, cfg.Disks)...)
	args = append(args, cfg.QEMUArgs...)
	return startQEMU(t, args, cfg.Timeout)
}

// diskArgs attaches raw images as virtio-blk disks, in order.
func diskArgs(t testing.TB, disks []string) []string {
	t.Helper()
	var args []string
	for _, d := range disks {
		if strings.Contains(d, ",") {
			t.Fatalf("disk path %q: QEMU's -drive cannot take a comma", d)
		}
		args = append(args, "-drive", "file="+d+",if=virtio,format=raw")
	}
	return args
}

// startQEMU runs QEMU with args and starts reading its console; Boot and
// BootUEFI share it.
func startQEMU(t testing.TB, args []string, timeout time.Duration) *VM {
	t.Helper()
	dir := t.TempDir()
	vm := &VM{
		t:       t,
		logPath: filepath.Join(dir, "console.log"),
		echo:    os.Getenv(ConsoleEnv) == "1",
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	logFile, err := os.Create(vm.logPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	vm.cmd = exec.Command(QEMU, args...)
	vm.cmd.Stdout, vm.cmd.Stderr = pw, pw // QEMU's own errors land in the log too
	t.Logf("%s %s", QEMU, shellQuote(args))
	vm.start = time.Now()
	vm.deadline = vm.start.Add(timeout)
	err = vm.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		logFile.Close()
		t.Fatalf("starting %s: %v", QEMU, err)
	}
	go vm.read(pr, logFile)
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			vm.reportFailure()
		}
	})
	return vm
}

// read consumes the console until QEMU exits, then records the exit.
func (vm *VM) read(r io.ReadCloser, log *os.File) {
	defer close(vm.done)
	defer log.Close()
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		chunk, err := br.ReadString('\n')
		if chunk != "" {
			log.WriteString(chunk)
			// Firmware and the kernel's boot stub send terminal escapes
			// (one resets the terminal); keep them out of what tests
			// search and print.
			chunk = printable(chunk)
			line := strings.TrimRight(chunk, "\r\n")
			if vm.echo {
				fmt.Fprintf(os.Stderr, "[%s] %s\n", vm.t.Name(), line)
			}
			vm.mu.Lock()
			vm.output.WriteString(chunk)
			vm.lines = append(vm.lines, line)
			vm.arrived = append(vm.arrived, time.Since(vm.start))
			vm.notifyLocked()
			vm.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	err := vm.cmd.Wait()
	vm.mu.Lock()
	vm.exited = true
	vm.exitCode = vm.cmd.ProcessState.ExitCode() // -1 when killed by a signal
	if err != nil && vm.exitCode == 0 {
		vm.exitCode = -1
	}
	vm.notifyLocked()
	vm.mu.Unlock()
}

func (vm *VM) notifyLocked() {
	close(vm.changed)
	vm.changed = make(chan struct{})
}

// WaitFor waits until a console line containing marker appears and returns
// that line. The search starts after the line the previous successful
// WaitFor returned, so a sequence of calls checks the order of the markers.
// It fails when QEMU exits first or the boot's timeout passes.
func (vm *VM) WaitFor(marker string) (string, error) {
	timer := time.NewTimer(time.Until(vm.deadline))
	defer timer.Stop()
	for {
		vm.mu.Lock()
		for i := vm.next; i < len(vm.lines); i++ {
			if strings.Contains(vm.lines[i], marker) {
				vm.next = i + 1
				vm.mu.Unlock()
				return vm.lines[i], nil
			}
		}
		exited, code, changed := vm.exited, vm.exitCode, vm.changed
		vm.mu.Unlock()
		if exited {
			return "", fmt.Errorf("QEMU exited (status %d) before %q appeared on the console", code, marker)
		}
		select {
		case <-changed:
		case <-timer.C:
			return "", fmt.Errorf("%q did not appear on the console within %v", marker, time.Since(vm.start).Round(time.Millisecond))
		}
	}
}

// Wait waits for QEMU to exit and returns its exit status. At the boot's
// timeout it kills QEMU and returns an error.
func (vm *VM) Wait() (int, error) {
	timer := time.NewTimer(time.Until(vm.deadline))
	defer timer.Stop()
	select {
	case <-vm.done:
	case <-timer.C:
		vm.Kill()
		return -1, fmt.Errorf("QEMU still running %v after start; killed it", time.Since(vm.start).Round(time.Millisecond))
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exitCode, nil
}

// printable drops ANSI escape sequences and other control characters from a
// console chunk, keeping tabs and line ends.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b && i+1 < len(s) && s[i+1] == '[':
			// CSI: parameters and intermediates up to a final byte.
			for i += 2; i < len(s) && (s[i] < 0x40 || s[i] > 0x7e); i++ {
			}
		case c == 0x1b:
			i++ // a two-byte escape such as ESC c
		case c < 0x20 && c != '\t' && c != '\n' && c != '\r', c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Kill stops QEMU (if it still runs) and waits until it has exited.
func (vm *VM) Kill() {
	select {
	case <-vm.done:
		return
	default:
	}
	if err := vm.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		vm.t.Logf("killing QEMU: %v", err)
	}
	<-vm.done
}

// Output returns the console output so far.
func (vm *VM) Output() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.output.String()
}

// Started returns when QEMU was started, for timing a boot.
func (vm *VM) Started() time.Time { return vm.start }

// PoweredOff reports whether the kernel announced a power-off
// (reboot(LINUX_REBOOT_CMD_POWER_OFF)).
func (vm *VM) PoweredOff() bool { return strings.Contains(vm.Output(), "reboot: Power down") }

// Rebooted reports whether the kernel announced a restart, the way a boot
// path that gives up hands control back to the boot loader; -no-reboot turns
// it into QEMU's exit.
func (vm *VM) Rebooted() bool { return strings.Contains(vm.Output(), "reboot: Restarting system") }

// Panicked reports whether the kernel panicked (for example because /init
// exited); panic=-1 reboots at once, which ends QEMU too.
func (vm *VM) Panicked() bool { return strings.Contains(vm.Output(), "Kernel panic - not syncing") }

// reportFailure prints the end of the console and keeps the whole log where
// it survives the test's temporary directory.
func (vm *VM) reportFailure() {
	out := vm.Output()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	const tail = 60
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	kept := ""
	if f, err := os.CreateTemp("", "cfs-deploy-vm-"+strings.ReplaceAll(vm.t.Name(), "/", "_")+"-*.log"); err == nil {
		f.WriteString(out)
		f.Close()
		kept = " (full log: " + f.Name() + ")"
	}
	vm.t.Logf("last %d console lines%s:\n%s", len(lines), kept, strings.Join(lines, "\n"))
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
