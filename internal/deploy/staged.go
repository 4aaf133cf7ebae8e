package deploy

import (
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

// readStaged reads the staged deployment's record; nil when none.
func (h *Host) readStaged() (*sysroot.Staged, error) {
	return sysroot.ReadStaged(h.Join(sysroot.StagedFile))
}

// stagedBootFiles returns the absolute paths of the staged deployment's
// kernel and initramfs, which no entry names yet but finalize will.
func (h *Host) stagedBootFiles() []string {
	st, err := h.readStaged()
	if err != nil || st == nil {
		return nil
	}
	var out []string
	for _, p := range append([]string{st.Linux}, st.Initrd...) {
		if p != "" {
			out = append(out, h.BootJoin(filepath.FromSlash(p)))
		}
	}
	return out
}
