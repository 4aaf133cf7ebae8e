// Command bootedinit is the /sbin/init of the composefs image that the VM
// tests boot through cfs-init. It shows what the booted system looks like,
// then powers off:
//
//	booted: pid 1, args [...]
//	booted: /etc/hostname: "..."
//	booted: wrote /etc/... and /var/...
//	booted: booted.json: {...}
//	booted: mount <line of /proc/mounts>    (one per mount)
//	BOOTED-OK
//
// Any failure prints BOOTED-FAIL and reboots instead.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	err := run()
	unix.Sync()
	if err != nil {
		fmt.Printf("BOOTED-FAIL: %v\n", err)
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	} else {
		fmt.Println("BOOTED-OK")
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	time.Sleep(time.Hour) // never exit as PID 1
}

func run() error {
	fmt.Printf("booted: pid %d, args %q\n", os.Getpid(), os.Args)
	host, err := os.ReadFile("/etc/hostname")
	if err != nil {
		return err
	}
	fmt.Printf("booted: /etc/hostname: %q\n", host)
	stamp := fmt.Sprintf("boot at %d\n", time.Now().UnixNano())
	for _, p := range []string{"/etc/booted-stamp", "/var/booted-stamp"} {
		if err := os.WriteFile(p, []byte(stamp), 0o644); err != nil {
			return err
		}
	}
	fmt.Println("booted: wrote /etc/booted-stamp and /var/booted-stamp")
	rec, err := os.ReadFile("/run/cfs-deploy/booted.json")
	if err != nil {
		return err
	}
	fmt.Printf("booted: booted.json: %s\n", bytes.Join(bytes.Fields(rec), []byte(" ")))
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(mounts)), "\n") {
		fmt.Printf("booted: mount %s\n", l)
	}
	return nil
}
