// Package gobuild builds the project's commands for black-box tests: the
// same binaries an installation ships (static, stripped, -trimpath), once
// per test process and build-tag set, in one temporary directory that
// Cleanup removes.
package gobuild

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var state struct {
	sync.Mutex
	dir  string            // this process's build directory
	bins map[string]string // package and tags -> binary
}

// Build builds the main package pkg, a path relative to the module root
// such as "./cmd/cfs-deploy", with the given build tags, and returns the
// binary's path. The binary is named after the package's last element;
// repeated calls with the same arguments return the same binary.
func Build(pkg string, tags ...string) (string, error) {
	state.Lock()
	defer state.Unlock()
	key := pkg + " " + strings.Join(tags, ",")
	if bin, ok := state.bins[key]; ok {
		return bin, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if state.dir == "" {
		if state.dir, err = os.MkdirTemp("", "cfs-deploy-gobuild-"); err != nil {
			return "", err
		}
		state.bins = map[string]string{}
	}
	dir, err := os.MkdirTemp(state.dir, "bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, path.Base(pkg))
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	// Static, as cfs-init must be in an initramfs; one set of flags for
	// every command keeps the build cache shared between test packages.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	state.bins[key] = bin
	return bin, nil
}

// T is Build for a test: it fails the test if the build fails.
func T(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	bin, err := Build(pkg, tags...)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Alias gives bin another name in its directory, a symlink, for commands
// that choose what to do by argv[0]; it returns the new name's path.
func Alias(bin, name string) (string, error) {
	state.Lock()
	defer state.Unlock()
	p := filepath.Join(filepath.Dir(bin), name)
	if err := os.Symlink(filepath.Base(bin), p); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return p, nil
}

// Cleanup removes everything Build made. Call it from TestMain after
// m.Run.
func Cleanup() {
	state.Lock()
	defer state.Unlock()
	if state.dir != "" {
		os.RemoveAll(state.dir)
		state.dir, state.bins = "", nil
	}
}

// ModuleRoot returns the directory of the go.mod that encloses the working
// directory (a test's working directory is its package directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
