// Package load loads kernel modules at boot from a precomputed list.
//
// It is what cfs-init links, so it must stay small: it imports only the
// standard library and golang.org/x/sys. It never decompresses anything
// itself; compressed modules (.ko.xz, .ko.zst, .ko.gz) are handed to the
// kernel with finit_module(2) and MODULE_INIT_COMPRESSED_FILE, and the
// kernel's own decompressor unpacks them (CONFIG_MODULE_DECOMPRESS). All
// dependency and order computation happens at build time (package kmod
// writes the list); this package only walks it.
package load

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// ListFile is the name of the load list inside a module directory
// (<root>/usr/lib/modules/<kver>/cfs-load.list). It holds one module path
// per line, relative to the module directory, in load order: every module
// comes after everything it needs.
const ListFile = "cfs-load.list"

// MaxListSize bounds the size of a load list file.
const MaxListSize = 1 << 20

// NormalizeName returns the canonical spelling of a module name: the kernel
// treats '-' and '_' in module names as the same character and reports
// names with '_', so this does too.
func NormalizeName(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

// compressionExts are the file name endings of compressed modules that the
// kernel can decompress itself.
var compressionExts = []string{".xz", ".zst", ".gz"}

// TrimModuleExt strips ".ko" and a compression ending from a file name.
// It reports false when name is not a module file name.
func TrimModuleExt(name string) (string, bool) {
	for _, ext := range compressionExts {
		if strings.HasSuffix(name, ".ko"+ext) {
			return strings.TrimSuffix(name, ".ko"+ext), true
		}
	}
	if strings.HasSuffix(name, ".ko") {
		return strings.TrimSuffix(name, ".ko"), true
	}
	return name, false
}

// ModuleName returns the canonical module name of a module file path, for
// example "nvme_core" for "kernel/drivers/nvme/host/nvme-core.ko.xz".
func ModuleName(p string) string {
	base, _ := TrimModuleExt(path.Base(p))
	return NormalizeName(base)
}

// ParseLoadList reads a load list: one relative module path per line.
// Blank lines and lines starting with '#' are ignored. Paths must be clean,
// relative, stay inside the module directory and name a module file.
func ParseLoadList(r io.Reader) ([]string, error) {
	var list []string
	sc := bufio.NewScanner(io.LimitReader(r, MaxListSize+1))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n, line := 0, 0
	for sc.Scan() {
		line++
		n += len(sc.Bytes()) + 1
		if n > MaxListSize {
			return nil, fmt.Errorf("load list larger than %d bytes", MaxListSize)
		}
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if err := checkRelPath(s); err != nil {
			return nil, fmt.Errorf("load list line %d: %w", line, err)
		}
		list = append(list, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("load list: %w", err)
	}
	return list, nil
}

func checkRelPath(p string) error {
	switch {
	case strings.ContainsAny(p, " \t\x00"):
		return fmt.Errorf("%q: blank or NUL in module path", p)
	case path.IsAbs(p):
		return fmt.Errorf("%q: module path must be relative to the module directory", p)
	case path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("%q: module path must be clean and inside the module directory", p)
	}
	if _, ok := TrimModuleExt(path.Base(p)); !ok {
		return fmt.Errorf("%q: not a module file (.ko, .ko.xz, .ko.zst, .ko.gz)", p)
	}
	return nil
}

// ReadLoadList reads a load list file (see ParseLoadList).
func ReadLoadList(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	list, err := ParseLoadList(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return list, nil
}

// ParseBuiltin reads modules.builtin (one "kernel/.../name.ko" path per
// line) and returns the set of canonical names of built-in modules.
func ParseBuiltin(r io.Reader) (map[string]bool, error) {
	set := make(map[string]bool)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		set[ModuleName(s)] = true
	}
	return set, sc.Err()
}

// ReadBuiltin reads <modDir>/modules.builtin. A missing file gives an empty
// set and no error.
func ReadBuiltin(modDir string) (map[string]bool, error) {
	f, err := os.Open(path.Join(modDir, "modules.builtin"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseBuiltin(f)
}

// Outcome is what happened to one module.
type Outcome int

const (
	// Loaded: the kernel accepted the module.
	Loaded Outcome = iota
	// AlreadyLoaded: EEXIST, the module was already in the kernel.
	AlreadyLoaded
	// Builtin: the file is absent and modules.builtin lists the module.
	Builtin
	// NotApplicable: ENODEV, the module's init found nothing to drive on
	// this machine (typically an accelerated crypto module on a CPU
	// without the instructions, such as crc32c_intel without SSE4.2).
	// The module's generic fallback covers for it, so this is not a failure.
	NotApplicable
	// Failed: anything else.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Loaded:
		return "loaded"
	case AlreadyLoaded:
		return "already loaded"
	case Builtin:
		return "built in"
	case NotApplicable:
		return "not applicable (ENODEV)"
	default:
		return "failed"
	}
}

// Classify maps the error of a finit_module(2) call to an Outcome.
func Classify(err error) Outcome {
	var errno syscall.Errno
	switch {
	case err == nil:
		return Loaded
	case errors.As(err, &errno) && errno == syscall.EEXIST:
		return AlreadyLoaded
	case errors.As(err, &errno) && errno == syscall.ENODEV:
		return NotApplicable
	default:
		return Failed
	}
}

// Hint explains the usual cause of a finit_module(2) errno in a few words,
// or returns "" when there is nothing useful to say. (ENOENT from the call
// itself means a missing symbol or algorithm, not a missing file.)
func Hint(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	if isSignatureErrno(errno) {
		return "module signature rejected"
	}
	switch errno {
	case syscall.ENOENT:
		return "a symbol or crypto algorithm the module needs is missing: a dependency or softdep was not loaded first"
	case syscall.ENOEXEC:
		return "not a module this kernel accepts (wrong kernel version, vermagic or format)"
	case syscall.EPERM:
		return "module loading not permitted (lockdown, modules_disabled or missing capability)"
	case syscall.EOPNOTSUPP:
		return "the kernel cannot decompress modules (CONFIG_MODULE_DECOMPRESS not set)"
	case syscall.EINVAL:
		return "invalid module or unsupported compression format or parameters"
	case syscall.ENOMEM:
		return "out of memory"
	case syscall.EBUSY:
		return "module is being loaded or removed concurrently"
	}
	return ""
}

// Error is the failure to load one module.
type Error struct {
	Module string // canonical module name
	Path   string // path relative to the module directory
	Op     string // "open" or "finit_module"
	Err    error  // usually a syscall.Errno
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("module %s (%s): %s: %s", e.Module, e.Path, e.Op, errText(e.Err))
	if h := Hint(e.Err); h != "" && e.Op == "finit_module" {
		msg += " (" + h + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// errText renders an errno as "ENOENT: no such file or directory".
func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := errnoName(errno); name != "" {
			return name + ": " + errno.Error()
		}
	}
	return err.Error()
}

// Options tune Load.
type Options struct {
	// Logf receives one line per module (outcome and time taken) and
	// per failure. Nil discards.
	Logf func(format string, args ...any)
	// Params returns the parameter string for a module (for example the
	// "ext4.foo=bar" options of the kernel command line, which the kernel
	// does not apply to modules loaded later). Nil means no parameters.
	Params func(module string) string
}

// Load loads the modules of list in order with finit_module(2).
//
// A compressed file is passed with MODULE_INIT_COMPRESSED_FILE so that the
// kernel decompresses it; a plain ELF .ko (recognised by its first bytes,
// not its name) is passed with flags 0. A module that is already loaded
// (EEXIST) or built in (file absent, name in modules.builtin) counts as
// success, and so does ENODEV (see NotApplicable). Load goes on after a
// failure, so that one log shows every problem, and returns all failures
// joined; each is an *Error naming the module and the errno.
func Load(modDir string, list []string, opts Options) error {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var builtin map[string]bool
	var errs []error
	for _, rel := range list {
		name := ModuleName(rel)
		start := time.Now()
		fd, err := openModule(path.Join(modDir, rel))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if builtin == nil {
					if builtin, err = ReadBuiltin(modDir); err != nil {
						builtin = map[string]bool{}
						logf("kmod: reading modules.builtin: %v", err)
					}
				}
				if builtin[name] {
					logf("kmod: %s: %s", name, Builtin)
					continue
				}
			}
			e := &Error{Module: name, Path: rel, Op: "open", Err: unwrapPathError(err)}
			logf("kmod: %v", e)
			errs = append(errs, e)
			continue
		}
		flags, err := finitFlags(fd)
		if err == nil {
			params := ""
			if opts.Params != nil {
				params = opts.Params(name)
			}
			err = finitModule(fd, params, flags)
		}
		closeFD(fd)
		switch o := Classify(err); o {
		case Loaded:
			logf("kmod: %s: %s in %v", name, o, time.Since(start).Round(time.Millisecond))
		case AlreadyLoaded, NotApplicable:
			logf("kmod: %s: %s", name, o)
		default:
			e := &Error{Module: name, Path: rel, Op: "finit_module", Err: err}
			logf("kmod: %v", e)
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// elfMagic starts every uncompressed module.
var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// flagsForHeader returns the finit_module flags for a file that starts
// with head: 0 for a plain ELF module, compressedFlag for anything else
// (the kernel checks the compression magic itself and says EINVAL if it
// does not know it).
func flagsForHeader(head []byte) int {
	if len(head) >= len(elfMagic) && string(head[:len(elfMagic)]) == string(elfMagic) {
		return 0
	}
	return compressedFlag
}
