package initramfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
)

// Modules read through an fs.FS give the same image as the same files on
// the host: the FS option only changes where bytes come from.
func TestBuildFromFS(t *testing.T) {
	tr := kmodtest.Kernel(t)
	init := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(init, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := Options{Init: init, KernelVersion: tr.Version, Modules: []string{"erofs", "overlay", "loop"}}
	host := opts
	host.ModulesTree = tr.Root
	var want bytes.Buffer
	if _, err := Build(&want, host); err != nil {
		t.Fatal(err)
	}
	viaFS := opts
	viaFS.FS = os.DirFS(tr.Root)
	var got bytes.Buffer
	m, err := Build(&got, viaFS)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("image from FS (%d bytes) differs from image from the host tree (%d bytes)", got.Len(), want.Len())
	}
	if len(m.Modules) == 0 || m.KernelVersion != tr.Version {
		t.Errorf("manifest: %d modules, kernel %q", len(m.Modules), m.KernelVersion)
	}

	both := viaFS
	both.ModulesTree = tr.Root
	if _, err := Build(&got, both); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("ModulesTree and FS together: %v", err)
	}
	missing := viaFS
	missing.KernelVersion = "0.0-none"
	if _, err := Build(&got, missing); err == nil || !strings.Contains(err.Error(), "no modules for kernel 0.0-none") {
		t.Errorf("missing kernel version: %v", err)
	}
}
