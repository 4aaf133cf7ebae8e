package deploy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev"
	"golang.org/x/sys/unix"
)

// mountInfo is the line of /proc/self/mountinfo for one mount.
type mountInfo struct {
	major, minor uint32
	mountPoint   string
	fsType       string
	source       string
}

// DetectRoot returns the root= value for the file system holding dir:
// UUID=<uuid> read from the superblock of its device. A UUID names the
// file system whatever the disk is called at boot, unlike /dev paths.
func DetectRoot(dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", fmt.Errorf("find the root device: stat %s: %w", dir, err)
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	mi, err := findMount("/proc/self/mountinfo", major, minor)
	if err != nil {
		return "", fmt.Errorf("find the root device of %s: %w", dir, err)
	}
	dev, err := mountDevice(mi)
	if err != nil {
		return "", fmt.Errorf("find the root device of %s (mounted at %s): %w", dir, mi.mountPoint, err)
	}
	fsys, err := blockdev.ProbeFile(dev)
	if err != nil {
		return "", fmt.Errorf("find the root device of %s: %w", dir, err)
	}
	if fsys.UUID == "" {
		return "", fmt.Errorf("find the root device of %s: the %s file system on %s has no UUID", dir, fsys.Type, dev)
	}
	return "UUID=" + fsys.UUID, nil
}

// mountDevice returns the block device node behind a mount. A real block
// device (major != 0) is found through sysfs, which knows its current
// name even when the mount table says /dev/root; btrfs mounts have an
// anonymous device number, so their source is used.
func mountDevice(mi mountInfo) (string, error) {
	if mi.major != 0 {
		link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", mi.major, mi.minor))
		if err == nil {
			dev := "/dev/" + filepath.Base(link)
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
	}
	if strings.HasPrefix(mi.source, "/dev/") {
		if _, err := os.Stat(mi.source); err == nil {
			return mi.source, nil
		}
	}
	return "", fmt.Errorf("%s file system from %q is not on a block device cfs-deploy can probe", mi.fsType, mi.source)
}

// findMount returns the mountinfo line of the mount with device number
// major:minor.
func findMount(path string, major, minor uint32) (mountInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return mountInfo{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		mi, ok := parseMountInfo(sc.Text())
		if ok && mi.major == major && mi.minor == minor {
			return mi, nil
		}
	}
	if err := sc.Err(); err != nil {
		return mountInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	return mountInfo{}, fmt.Errorf("no mount with device %d:%d in %s", major, minor, path)
}

// parseMountInfo reads one line of proc(5) mountinfo:
// "id parent major:minor root mountpoint options [optional...] - fstype source superoptions".
func parseMountInfo(line string) (mountInfo, bool) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
		return mountInfo{}, false
	}
	ma, mi, ok := strings.Cut(f[2], ":")
	if !ok {
		return mountInfo{}, false
	}
	major, err1 := strconv.ParseUint(ma, 10, 32)
	minor, err2 := strconv.ParseUint(mi, 10, 32)
	if err1 != nil || err2 != nil {
		return mountInfo{}, false
	}
	return mountInfo{
		major: uint32(major), minor: uint32(minor),
		mountPoint: unescapeMount(f[4]),
		fsType:     f[sep+1],
		source:     unescapeMount(f[sep+2]),
	}, true
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space, ...)
// in mountinfo fields.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
