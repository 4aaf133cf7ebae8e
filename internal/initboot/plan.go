package initboot

import (
	"errors"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

// How long to wait for the root device. The kernel waits for ever with
// rootwait; cfs-init gives up so that the boot loader can try another
// entry, and says what it is waiting for meanwhile.
const (
	DefaultRootTimeout = 10 * time.Second
	RootWaitTimeout    = 60 * time.Second
	DefaultRebootDelay = bootcfg.DefaultRebootDelay
	defaultRootFSTypes = "ext4,xfs,btrfs"
)

// Plan is what the kernel command line asks cfs-init to do.
type Plan struct {
	Root      bootcfg.RootSpec // Kind "" when root= is absent
	FSTypes   []string         // rootfstype=, in order; empty means probe, then the defaults
	RootFlags string           // rootflags=, the mount data
	// ReadOnly mounts the physical root read-only (ro). cfs-init mounts it
	// read-write unless ro is given, unlike the kernel, because the
	// deployment's /etc and /var live on it.
	ReadOnly bool
	// RootTimeout bounds the wait for the root device; RootWait says the
	// command line asked to wait (rootwait), so progress is reported.
	RootTimeout time.Duration
	RootWait    bool
	RootDelay   time.Duration // rootdelay=: pause before looking
	Init        string        // init=, or /sbin/init

	// Images are the composefs images named on the command line, in the
	// order they are tried.
	Images []bootcfg.ImageRef

	Debug       bool          // cfs.debug: print every step
	Emergency   bool          // cfs.emergency: open /bin/sh on failure
	RebootDelay time.Duration // cfs.reboot-delay=N: pause before rebooting on failure

	// ModuleParams holds "module.param=value" arguments by module name,
	// which the kernel does not apply to modules loaded later.
	ModuleParams map[string]string
	// Unknown lists cfs.* options cfs-init does not know, for a warning.
	Unknown []string
}

// NewPlan reads a kernel command line. A value that is present but
// unusable is an error: booting with a guess is worse than stopping.
func NewPlan(cmdline string) (*Plan, error) {
	c := bootcfg.ParseCmdline(cmdline)
	opts, err := bootcfg.ParseBootOptions(c)
	if err != nil {
		return nil, err
	}
	p := &Plan{
		Root:         opts.Root,
		RootFlags:    opts.RootFlags,
		ReadOnly:     readOnly(c),
		RootTimeout:  DefaultRootTimeout,
		RootWait:     opts.RootWait,
		RootDelay:    opts.RootDelay,
		Init:         opts.Init,
		Images:       opts.Images,
		ModuleParams: moduleParams(c),
	}
	if opts.RootFSType != "" {
		for _, t := range strings.Split(opts.RootFSType, ",") {
			if t = strings.TrimSpace(t); t != "" {
				p.FSTypes = append(p.FSTypes, t)
			}
		}
	}
	if opts.RootWait {
		p.RootTimeout = RootWaitTimeout
		if opts.RootWaitTimeout > 0 {
			p.RootTimeout = opts.RootWaitTimeout
		}
	}
	p.Debug, p.Emergency, p.RebootDelay, p.Unknown = opts.Debug, opts.Emergency, opts.RebootDelay, opts.UnknownCFS
	if len(p.Images) == 0 {
		return nil, errors.New("the kernel command line names no composefs image: it needs composefs=<64 hex digits> (or composefs.digest=v1-sha256-12:<hex>), which the boot entry cfs-deploy wrote carries")
	}
	return p, nil
}

// readOnly reads ro/rw from the kernel part of the command line; the last
// one wins and rw is the default.
func readOnly(c bootcfg.Cmdline) bool {
	ro := false
	for _, p := range c.Kernel() {
		if !p.HasValue {
			switch p.Key {
			case "ro":
				ro = true
			case "rw":
				ro = false
			}
		}
	}
	return ro
}

// moduleParams collects "module.param=value" arguments, as modprobe would
// hand them to the module: "param=value param2" by module name, with the
// kernel's '-'/'_' equivalence in module names.
func moduleParams(c bootcfg.Cmdline) map[string]string {
	params := map[string]string{}
	for _, p := range c.Kernel() {
		mod, name, ok := strings.Cut(p.Key, ".")
		if !ok || mod == "" || name == "" || strings.HasPrefix(p.Key, bootcfg.CFSPrefix) ||
			p.Key == bootcfg.KeyComposefsDigest {
			continue
		}
		mod = strings.ReplaceAll(mod, "-", "_")
		arg := name
		if p.HasValue {
			arg = (bootcfg.Param{Key: name, Value: p.Value, HasValue: true}).String()
		}
		if params[mod] != "" {
			params[mod] += " "
		}
		params[mod] += arg
	}
	return params
}

// rootFSTypes returns the file system types to try for the root device:
// rootfstype= as given, otherwise the probed type first, then the others
// cfs-init supports.
func (p *Plan) rootFSTypes(probed string) []string {
	if len(p.FSTypes) > 0 {
		return p.FSTypes
	}
	var types []string
	if probed != "" {
		types = append(types, probed)
	}
	for _, t := range strings.Split(defaultRootFSTypes, ",") {
		if t != probed {
			types = append(types, t)
		}
	}
	return types
}

// failurePlan reads only what the failure path needs (cfs.emergency,
// cfs.reboot-delay) from a command line that NewPlan refused, so that the
// operator's choice still holds when the line is broken elsewhere.
func failurePlan(cmdline string) *Plan {
	p := &Plan{}
	p.Emergency, p.RebootDelay = bootcfg.FailureOptions(bootcfg.ParseCmdline(cmdline))
	return p
}
