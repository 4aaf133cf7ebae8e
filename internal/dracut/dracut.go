// Package dracut builds a deployment's initramfs with dracut, the generic
// initramfs builder of most distributions, instead of cfs-deploy's own
// (package initramfs): systemd runs the boot, and the cfs-deploy dracut
// module (dracut/90cfs-deploy in the source tree) adds cfs-init and the
// unit that runs `cfs-init setup-root` once the physical root is mounted.
//
// The kernel the image is for is usually not the running one: its module
// tree comes from the commit being rolled out, extracted with
// ExtractModules, and is handed to dracut with --kmoddir.
package dracut

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ModuleName is the dracut module's name (its directory is 90cfs-deploy).
const ModuleName = "cfs-deploy"

// InitEnv is the environment variable through which module-setup.sh takes
// the cfs-init binary to install.
const InitEnv = "CFS_DEPLOY_CFS_INIT"

// DefaultBaseDir is where dracut keeps its modules (modules.d) and helpers.
const DefaultBaseDir = "/usr/lib/dracut"

var (
	// ErrNoDracut: the dracut program is not installed.
	ErrNoDracut = errors.New("dracut not found (Debian and Fedora: package dracut, or dracut-core)")
	// ErrNoInit: the cfs-init binary to put into the image is missing.
	ErrNoInit = errors.New("cfs-init not found")
	// ErrNoModule: dracut does not have the cfs-deploy module and none was
	// given.
	ErrNoModule = errors.New("dracut has no cfs-deploy module")
)

// Options say what to build.
type Options struct {
	// KernelVersion is the kernel release (uname -r) the image is for.
	KernelVersion string
	// ModulesDir is that kernel's module directory with depmod's files:
	// <root>/lib/modules/<KernelVersion> (ExtractModules makes one from a
	// commit's tree).
	ModulesDir string
	// Init is the cfs-init binary (static) the image runs for setup-root.
	Init string
	// HostOnly builds in dracut's hostonly mode (its default), keeping
	// only the kernel modules and configuration the build host uses; off,
	// a generic image (--no-hostonly) that boots on other machines too,
	// and is larger. The cfs-deploy module's own kernel modules (erofs,
	// overlay, loop) go in either way.
	HostOnly bool
	// Modules, if not nil, is the exact set of dracut modules (dracut -m);
	// cfs-deploy and what it depends on are added. Nil: dracut's own
	// selection plus cfs-deploy (--add).
	Modules []string
	// Drivers are kernel modules to add (--add-drivers), for example the
	// root disk's controller and file system when the build host does
	// not use them.
	Drivers []string
	// Compression is "zstd", "gzip" or "none"; empty leaves it to dracut's
	// configuration.
	Compression string
	// ModuleSource, if set, is a directory holding the cfs-deploy dracut
	// module (module-setup.sh ...) to use instead of an installed one; a
	// private view of BaseDir with it added is used, so nothing is
	// installed on the host.
	ModuleSource string
	// BaseDir is dracut's base directory; empty means DefaultBaseDir.
	BaseDir string
	// IgnoreHostConfig leaves /etc/dracut.conf and /etc/dracut.conf.d out,
	// so that the image depends only on these options (for tests).
	IgnoreHostConfig bool
	// ExtraArgs are passed to dracut before the output file.
	ExtraArgs []string
	// Dracut is the program to run; empty means "dracut" in PATH.
	Dracut string
	// Log, if set, receives dracut's output as it runs; otherwise the end
	// of it is in the error when the build fails.
	Log io.Writer
}

// Result describes a built image.
type Result struct {
	Path     string
	Size     int64
	Args     []string // dracut's arguments
	Duration time.Duration
}

// Build runs dracut to write the initramfs out. It checks first what
// dracut would not: that cfs-init, the module directory with depmod's
// files and the dracut module are there, so that a missing piece is a
// clear error and never an image that cannot boot.
func Build(ctx context.Context, out string, opts Options) (*Result, error) {
	start := time.Now()
	prog := opts.Dracut
	if prog == "" {
		prog = "dracut"
	}
	prog, err := exec.LookPath(prog)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDracut, err)
	}
	if err := checkKernelVersion(opts.KernelVersion); err != nil {
		return nil, err
	}
	if err := checkInit(opts.Init); err != nil {
		return nil, err
	}
	if err := checkModulesDir(opts.ModulesDir); err != nil {
		return nil, err
	}
	base := opts.BaseDir
	if base == "" {
		base = DefaultBaseDir
	}
	env := os.Environ()
	if opts.ModuleSource != "" {
		view, err := baseDirWithModule(base, opts.ModuleSource)
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(view)
		base = view
		// dracut reads its base directory from the environment.
		env = append(env, "dracutbasedir="+view)
	} else if !hasModule(base) {
		return nil, fmt.Errorf("%w in %s/modules.d: install dracut/90cfs-deploy there (see dracut/README.md)", ErrNoModule, base)
	}
	init, err := filepath.Abs(opts.Init)
	if err != nil {
		return nil, err
	}
	env = append(env, InitEnv+"="+init)

	args, cleanup, err := buildArgs(out, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = env
	var tail tailBuffer
	if opts.Log != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(opts.Log, &tail), io.MultiWriter(opts.Log, &tail)
	} else {
		cmd.Stdout, cmd.Stderr = &tail, &tail
	}
	if err := cmd.Run(); err != nil {
		os.Remove(out) // dracut renames into place; nothing partial, but be sure
		return nil, fmt.Errorf("dracut %s: %w\n%s", strings.Join(args, " "), err, tail.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		return nil, fmt.Errorf("dracut succeeded but wrote no %s: %w", out, err)
	}
	return &Result{Path: out, Size: fi.Size(), Args: args, Duration: time.Since(start)}, nil
}

// buildArgs is dracut's command line. cleanup removes the empty
// configuration directory IgnoreHostConfig points dracut at.
func buildArgs(out string, opts Options) (args []string, cleanup func(), err error) {
	cleanup = func() {}
	args = []string{"--force", "--kver", opts.KernelVersion, "--kmoddir", opts.ModulesDir}
	if opts.HostOnly {
		// The entries cfs-deploy writes carry root= and the rest; a copy
		// of the build host's would only go stale.
		args = append(args, "--hostonly", "--no-hostonly-cmdline")
	} else {
		args = append(args, "--no-hostonly")
	}
	if opts.Modules != nil {
		mods := append(append([]string{}, opts.Modules...), ModuleName)
		args = append(args, "--modules", strings.Join(mods, " "))
	} else {
		args = append(args, "--add", ModuleName)
	}
	if len(opts.Drivers) > 0 {
		args = append(args, "--add-drivers", strings.Join(opts.Drivers, " "))
	}
	switch opts.Compression {
	case "":
	case "zstd", "gzip":
		args = append(args, "--"+opts.Compression)
	case "none":
		args = append(args, "--no-compress")
	default:
		return nil, cleanup, fmt.Errorf("compression %q: want zstd, gzip or none", opts.Compression)
	}
	if opts.IgnoreHostConfig {
		empty, err := os.MkdirTemp("", "cfs-deploy-dracut-conf-")
		if err != nil {
			return nil, cleanup, err
		}
		cleanup = func() { os.RemoveAll(empty) }
		args = append(args, "--conf", os.DevNull, "--confdir", empty)
	}
	args = append(args, opts.ExtraArgs...)
	return append(args, out), cleanup, nil
}

func checkKernelVersion(v string) error {
	if v == "" || v[0] == '.' || strings.ContainsAny(v, "/\x00 \t\n") {
		return fmt.Errorf("kernel version %q cannot name a module directory", v)
	}
	return nil
}

func checkInit(p string) error {
	if p == "" {
		return fmt.Errorf("%w: no cfs-init binary given", ErrNoInit)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoInit, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: %s is not an executable file", ErrNoInit, p)
	}
	return nil
}

func checkModulesDir(dir string) error {
	if dir == "" {
		return errors.New("no kernel module directory given")
	}
	if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err != nil {
		return fmt.Errorf("kernel module directory %s: no modules.dep (run depmod): %w", dir, err)
	}
	return nil
}

// hasModule reports whether base/modules.d holds the cfs-deploy module
// under any priority prefix.
func hasModule(base string) bool {
	m, _ := filepath.Glob(filepath.Join(base, "modules.d", "[0-9][0-9]"+ModuleName, "module-setup.sh"))
	return len(m) > 0
}

// baseDirWithModule makes a temporary directory that looks like dracut's
// base directory base, with links to its helpers and modules, plus the
// module in src as 90cfs-deploy (replacing an installed one), and returns
// it.
func baseDirWithModule(base, src string) (string, error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(src, "module-setup.sh")); err != nil {
		return "", fmt.Errorf("%w: %s is not a dracut module directory: %v", ErrNoModule, src, err)
	}
	if _, err := os.Stat(filepath.Join(base, "dracut-init.sh")); err != nil {
		return "", fmt.Errorf("%w: %s is not dracut's base directory: %v", ErrNoDracut, base, err)
	}
	view, err := os.MkdirTemp("", "cfs-deploy-dracut-")
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(view)
		return "", err
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		return fail(err)
	}
	for _, e := range ents {
		if e.Name() == "modules.d" {
			continue
		}
		if err := os.Symlink(filepath.Join(base, e.Name()), filepath.Join(view, e.Name())); err != nil {
			return fail(err)
		}
	}
	mods := filepath.Join(view, "modules.d")
	if err := os.Mkdir(mods, 0o755); err != nil {
		return fail(err)
	}
	ents, err = os.ReadDir(filepath.Join(base, "modules.d"))
	if err != nil {
		return fail(err)
	}
	for _, e := range ents {
		if len(e.Name()) > 2 && e.Name()[2:] == ModuleName {
			continue
		}
		if err := os.Symlink(filepath.Join(base, "modules.d", e.Name()), filepath.Join(mods, e.Name())); err != nil {
			return fail(err)
		}
	}
	if err := os.Symlink(src, filepath.Join(mods, "90"+ModuleName)); err != nil {
		return fail(err)
	}
	return view, nil
}

// tailBuffer keeps the last part of a command's output for an error.
type tailBuffer struct{ b bytes.Buffer }

const tailMax = 8 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 2*tailMax {
		keep := append([]byte(nil), t.b.Bytes()[t.b.Len()-tailMax:]...)
		t.b.Reset()
		t.b.Write(keep)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	s := t.b.String()
	if len(s) > tailMax {
		s = "..." + s[len(s)-tailMax:]
	}
	return strings.TrimSpace(s)
}
