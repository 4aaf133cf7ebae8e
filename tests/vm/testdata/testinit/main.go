// Command testinit is /sbin/init of the small OS that the VM boot tests
// deploy with cfs-deploy and boot through cfs-init. It reports what the
// booted system looks like on the serial console and powers off; the test
// reads the console.
//
// It prints, in this order:
//
//	CFSTEST-INIT uptime=<seconds> pid=<pid>  first thing, for boot timing
//	cfstest: mount <line>                    every line of /proc/mounts
//	cfstest: root-statfs ro=<bool>           whether / is mounted read-only
//	cfstest: booted.json <one line of JSON>  cfs-init's boot record
//
// then does what the kernel command line asks (lists are comma-separated):
//
//	cfstest.read=PATH,...   "cfstest: read PATH: N bytes sha256:HEX", or
//	                        "cfstest: read PATH: error after N bytes: ERRNO"
//	cfstest.token=T         the content cfstest.write writes ("T\n")
//	cfstest.write=PATH,...  "cfstest: write PATH: ok" or "...: error: ERRNO"
//	cfstest.show=PATH,...   "cfstest: show PATH: \"CONTENT\"" or "...: error: ERRNO"
//	cfstest.rundev=DEV      the disk cfstest.run mounts (default /dev/vdb)
//	cfstest.run=SCRIPT      mount that disk (ext4, read-only) on /mnt and run
//	                        /bin/sh /mnt/SCRIPT; every line it prints comes out
//	                        as "cfstest: run| LINE", then "cfstest: run exit=N"
//	cfstest.finalize        at shutdown run "cfs-deploy finalize", as an init
//	                        system does for a staged deployment:
//	                        "cfstest: finalize| LINE", "cfstest: finalize exit=N"
//
// and ends with "CFSTEST-DONE", syncs and powers off.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	// cfs-init moves /proc into the new root; mount it if it did not, so
	// that the report still comes.
	if _, err := os.Stat("/proc/self"); err != nil {
		unix.Mount("proc", "/proc", "proc", 0, "")
	}
	uptime := "?"
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		uptime = strings.Fields(string(b))[0]
	}
	fmt.Printf("CFSTEST-INIT uptime=%s pid=%d\n", uptime, os.Getpid())

	report()
	if _, ok := cmdline()["cfstest.finalize"]; ok {
		shutdownFinalize()
	}
	fmt.Println("CFSTEST-DONE")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if reboot(2) failed: exiting panics the kernel, and
	// panic=-1 ends the VM.
	os.Exit(1)
}

func report() {
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			fmt.Printf("cfstest: mount %s\n", l)
		}
	} else {
		fmt.Printf("cfstest: mounts: error: %v\n", errText(err))
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err == nil {
		fmt.Printf("cfstest: root-statfs ro=%v\n", st.Flags&unix.ST_RDONLY != 0)
	}
	if b, err := os.ReadFile("/run/cfs-deploy/booted.json"); err == nil {
		var compact bytes.Buffer
		if json.Compact(&compact, b) == nil {
			b = compact.Bytes()
		}
		fmt.Printf("cfstest: booted.json %s\n", b)
	} else {
		fmt.Printf("cfstest: booted.json error: %v\n", errText(err))
	}

	opts := cmdline()
	for _, p := range list(opts["cfstest.read"]) {
		n, sum, err := readAll(p)
		if err != nil {
			fmt.Printf("cfstest: read %s: error after %d bytes: %s\n", p, n, errText(err))
		} else {
			fmt.Printf("cfstest: read %s: %d bytes sha256:%x\n", p, n, sum)
		}
	}
	token := opts["cfstest.token"]
	for _, p := range list(opts["cfstest.write"]) {
		if err := writeSync(p, []byte(token+"\n")); err != nil {
			fmt.Printf("cfstest: write %s: error: %s\n", p, errText(err))
		} else {
			fmt.Printf("cfstest: write %s: ok\n", p)
		}
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		fmt.Printf("cfstest: cmdline %s\n", strings.TrimSpace(string(b)))
	}
	if script := opts["cfstest.run"]; script != "" {
		dev := opts["cfstest.rundev"]
		if dev == "" {
			dev = "/dev/vdb"
		}
		run(dev, script)
	}
	for _, p := range list(opts["cfstest.show"]) {
		if b, err := os.ReadFile(p); err != nil {
			fmt.Printf("cfstest: show %s: error: %s\n", p, errText(err))
		} else {
			fmt.Printf("cfstest: show %s: %q\n", p, b)
		}
	}
}

// run runs a test script from the second disk: the steps a scenario
// performs on the booted system (edit /etc, commit, roll out, ...).
func run(dev, script string) {
	if err := os.MkdirAll("/mnt", 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		// The image's / is read-only; /mnt must exist in the tree.
		fmt.Printf("cfstest: run exit=-1 (mkdir /mnt: %s)\n", errText(err))
		return
	}
	if err := unix.Mount(dev, "/mnt", "ext4", unix.MS_RDONLY, ""); err != nil {
		fmt.Printf("cfstest: run exit=-1 (mount %s: %s)\n", dev, errText(err))
		return
	}
	defer unix.Unmount("/mnt", 0)
	cmd := exec.Command("/bin/sh", "/mnt/"+script)
	cmd.Env = []string{"PATH=/usr/bin:/usr/sbin:/bin:/sbin", "HOME=/root"}
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Printf("cfstest: run exit=-1 (%s)\n", errText(err))
		return
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err == nil {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fmt.Printf("cfstest: run| %s\n", sc.Text())
		}
		err = cmd.Wait()
	}
	pr.Close()
	fmt.Printf("cfstest: run exit=%d\n", exitCode(err))
}

// shutdownFinalize is what an init system without systemd does on its way
// down when a deployment may be staged: it runs cfs-deploy finalize.
func shutdownFinalize() {
	out, err := exec.Command("/usr/bin/cfs-deploy", "finalize").CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fmt.Printf("cfstest: finalize| %s\n", l)
	}
	fmt.Printf("cfstest: finalize exit=%d\n", exitCode(err))
}

// exitCode is a finished command's exit status, -1 if it did not run or
// died of a signal.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// readAll reads the whole file, so fs-verity checks every block, and
// returns how much it got before any error.
func readAll(p string) (int64, [32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

func writeSync(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cmdline() map[string]string {
	opts := make(map[string]string)
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fmt.Printf("cfstest: cmdline error: %v\n", errText(err))
		return opts
	}
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		opts[k] = v
	}
	return opts
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// errText prefers the errno's plain text ("input/output error"), which the
// test matches.
func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
