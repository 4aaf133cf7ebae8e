package treecmp

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Xattrs returns the extended attributes of path (not following
// symlinks), all namespaces the caller may read.
func Xattrs(path string) (map[string]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %w", path, err)
	}
	buf := make([]byte, size+256) // room for a name added meanwhile
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %w", path, err)
	}
	out := map[string]string{}
	for _, k := range bytes.Split(buf[:size], []byte{0}) {
		if len(k) == 0 {
			continue
		}
		key := string(k)
		val := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(path, key, val)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s %s: %w", path, key, err)
		}
		out[key] = string(val[:n])
	}
	return out, nil
}

// SELinuxEnabled reports whether the host's SELinux labels what it mounts,
// so that security.selinux in a mount is the host's, not the source's.
var SELinuxEnabled = func() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}()

// Visible drops what overlayfs and the host's LSM add: trusted.overlay.*
// and user.overlay.* are the overlay's and the image's own bookkeeping.
func Visible(x map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range x {
		if strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.") {
			continue
		}
		if k == "security.selinux" && SELinuxEnabled {
			continue
		}
		out[k] = v
	}
	return out
}

// FormatXattrs shows xattrs for a message, sorted, long values cut.
func FormatXattrs(x map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(x)) {
		v := x[k]
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	return "{" + strings.Join(parts, " ") + "}"
}
