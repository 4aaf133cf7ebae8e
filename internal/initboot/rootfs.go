package initboot

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// How often to look for the root device: often at first, since a virtio
// disk appears within a millisecond of its module loading, then less.
const (
	pollFast       = 2 * time.Millisecond
	pollSlow       = 50 * time.Millisecond
	pollFastPeriod = 200 * time.Millisecond
	waitQuietFor   = 2 * time.Second // report waiting only after this long
	waitReportGap  = 3 * time.Second
)

// waitRoot waits until the root device named by the plan appears, saying
// what it waits for, and fails after the plan's timeout with the devices
// it did see.
func waitRoot(p *Plan, ds *Devices, log *Log) (*blockDev, error) {
	if p.Root.Kind == "" {
		return nil, errors.New("the kernel command line has no root= to say where the deployments are (root=/dev/..., UUID=, LABEL=, PARTUUID= or PARTLABEL=)")
	}
	if p.RootDelay > 0 {
		log.Debugf("rootdelay: waiting %v before looking for the root device", p.RootDelay)
		time.Sleep(p.RootDelay)
	}
	start := time.Now()
	nextReport := waitQuietFor
	log.Debugf("looking for root device %s, for up to %v", p.Root, p.RootTimeout)
	for {
		d, err := ds.Find(p.Root)
		if err != nil {
			return nil, fmt.Errorf("looking for root device %s: %w", p.Root, err)
		}
		if d != nil {
			return d, nil
		}
		waited := time.Since(start)
		if waited >= p.RootTimeout {
			return nil, fmt.Errorf("root device %s did not appear within %v; %s", p.Root, p.RootTimeout, ds.describe())
		}
		if waited >= nextReport {
			log.Printf("waiting for root device %s (%ds of %ds)", p.Root, int(waited.Seconds()), int(p.RootTimeout.Seconds()))
			nextReport += waitReportGap
		}
		if waited < pollFastPeriod {
			time.Sleep(pollFast)
		} else {
			time.Sleep(pollSlow)
		}
	}
}

// mountRoot mounts the root device on target, trying the plan's file
// system types in order. It says which types failed and why when none
// works. A device that refuses writes is mounted read-only, as the kernel
// does, with a warning; the returned ro reports it.
func mountRoot(p *Plan, d *blockDev, target string, log *Log) (fstype string, ro bool, err error) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", false, err
	}
	ro = p.ReadOnly
	var tries []string
	for _, t := range p.rootFSTypes(d.FS.Type) {
		flags := uintptr(unix.MS_SILENT)
		if ro {
			flags |= unix.MS_RDONLY
		}
		err := unix.Mount(d.Node, target, t, flags, p.RootFlags)
		if (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS)) && !ro {
			if err = unix.Mount(d.Node, target, t, flags|unix.MS_RDONLY, p.RootFlags); err == nil {
				ro = true
				log.Printf("warning: %s refuses writes, mounted read-only: /etc and /var will be read-only", d.Node)
			}
		}
		if err == nil {
			return t, ro, nil
		}
		tries = append(tries, t+": "+mountErrText(err))
		// ENODEV: no such file system type; EINVAL: not this type (or
		// bad rootflags). Anything else is about the device: stop.
		if !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	how := ""
	if p.RootFlags != "" {
		how = " with rootflags=" + p.RootFlags
	}
	return "", ro, fmt.Errorf("cannot mount root device %s on %s%s: %s", d, target, how, strings.Join(tries, "; "))
}

func mountErrText(err error) string {
	switch {
	case errors.Is(err, unix.ENODEV):
		return "the kernel does not know this file system type (its module is missing from the initramfs or failed to load)"
	case errors.Is(err, unix.EINVAL):
		return "not this file system type, or bad rootflags"
	}
	return err.Error()
}
