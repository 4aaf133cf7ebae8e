package osprep

import (
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
)

// Check reports how the tree at root falls short of the layout Prepare
// makes, in what breaks on the booted system: writable directories that
// are directories of the read-only image, and an fstab entry for /. It
// looks up a few entries and reads /etc/fstab only, so rollout can afford
// it. No problems means nil.
func Check(root *erofs.Node, r Reader) []string {
	var dirs, problems []string
	for _, l := range varLinks {
		if n := lookup(root, l.path); n != nil && n.Target().IsDir() {
			dirs = append(dirs, "/"+l.path)
		}
	}
	if len(dirs) > 0 {
		problems = append(problems, fmt.Sprintf("%s: directories of the read-only image, not links into /var, so nothing can be written there", strings.Join(dirs, ", ")))
	}
	if n := lookup(root, fstabPath); n != nil && n.Target().IsRegular() {
		data, err := readContent(n, r)
		if err != nil {
			problems = append(problems, fmt.Sprintf("cannot check /etc/fstab: %v", err))
		} else if roots := rootEntries(data); len(roots) > 0 {
			problems = append(problems, fmt.Sprintf("/etc/fstab has an entry for / (%q): systemd-remount-fs fails on the read-only root", roots[0]))
		}
	}
	return problems
}
