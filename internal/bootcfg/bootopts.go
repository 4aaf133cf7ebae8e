package bootcfg

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultInit is what the kernel runs when init= is not given (its first
// choice; it falls back to others, cfs-init does not).
const DefaultInit = "/sbin/init"

// CFSPrefix starts the names of cfs-init's own options (cfs.debug, ...).
const CFSPrefix = "cfs."

// BootOptions are the kernel arguments cfs-init acts on.
type BootOptions struct {
	Root       RootSpec // Kind is "" when root= is absent
	RootFSType string   // may be a comma-separated list to try in order
	RootFlags  string
	// RootWait waits for the root device to appear; RootWaitTimeout
	// bounds the wait (rootwait=<seconds>), 0 meaning for ever.
	RootWait        bool
	RootWaitTimeout time.Duration
	RootDelay       time.Duration // rootdelay=<seconds>: sleep before looking
	ReadOnly        bool          // ro/rw, last wins; ro unless rw is given
	Init            string        // init=, DefaultInit if absent
	Images          []ImageRef    // composefs= / composefs.digest=, in order
	// CFS holds cfs.<name>[=value] options by name without the prefix;
	// a flag without '=' has value "". The last occurrence wins.
	CFS map[string]string

	// cfs-init's own options, read from CFS.
	Debug       bool          // cfs.debug: print every step
	Emergency   bool          // cfs.emergency: open a shell on failure
	RebootDelay time.Duration // cfs.reboot-delay=N: pause before rebooting on failure
	// UnknownCFS lists cfs.* options cfs-init does not know, for a warning.
	UnknownCFS []string
}

// cfs-init's own options (cfs.<name>).
const (
	CFSDebug       = "debug"
	CFSEmergency   = "emergency"
	CFSRebootDelay = "reboot-delay"
	// CFSKnown lists them for messages.
	CFSKnown = "cfs.debug, cfs.emergency, cfs.reboot-delay=N"
	// DefaultRebootDelay is how long cfs-init waits before rebooting
	// after a failure, unless cfs.reboot-delay says otherwise.
	DefaultRebootDelay = 5 * time.Second
	// MaxRebootDelay bounds cfs.reboot-delay: a longer pause would keep
	// the boot loader from trying another entry for too long.
	MaxRebootDelay = time.Hour
)

// ParseBootOptions extracts the boot options from the kernel part of c.
// Like the kernel, it only recognises root=, init= and friends with an '='
// and ro/rw without one; other spellings are not these options and are
// ignored. Values that are present but unusable are errors, since booting
// with a guess is worse than stopping. This is the parser cfs-init boots
// with, so rollout and kargs check every command line they write with it.
func ParseBootOptions(c Cmdline) (BootOptions, error) {
	o := BootOptions{ReadOnly: true, Init: DefaultInit, CFS: map[string]string{}, RebootDelay: DefaultRebootDelay}
	root, hasRoot := "", false
	for _, p := range c.Kernel() {
		if !p.HasValue {
			switch p.Key {
			case "ro":
				o.ReadOnly = true
			case "rw":
				o.ReadOnly = false
			case "rootwait":
				o.RootWait, o.RootWaitTimeout = true, 0
			}
		} else {
			var err error
			switch p.Key {
			case "root":
				root, hasRoot = p.Value, true
			case "rootfstype":
				o.RootFSType = p.Value
			case "rootflags":
				o.RootFlags = p.Value
			case "rootwait":
				o.RootWait = true
				o.RootWaitTimeout, err = parseSeconds(p)
			case "rootdelay":
				o.RootDelay, err = parseSeconds(p)
			case "init":
				if p.Value == "" {
					err = fmt.Errorf("init=: empty path")
				}
				o.Init = p.Value
			}
			if err != nil {
				return BootOptions{}, err
			}
		}
		if name, ok := strings.CutPrefix(p.Key, CFSPrefix); ok {
			if name == "" {
				return BootOptions{}, fmt.Errorf("kernel argument %q: no option name after %q", p.String(), CFSPrefix)
			}
			o.CFS[name] = p.Value
		}
	}
	if hasRoot {
		r, err := ParseRoot(root)
		if err != nil {
			return BootOptions{}, err
		}
		o.Root = r
	}
	imgs, err := ComposefsRefs(c)
	if err != nil {
		return BootOptions{}, err
	}
	o.Images = imgs
	if !strings.HasPrefix(o.Init, "/") {
		return BootOptions{}, fmt.Errorf("init=%s: must be an absolute path", o.Init)
	}
	if err := o.readCFS(); err != nil {
		return BootOptions{}, err
	}
	return o, nil
}

// readCFS checks cfs-init's own options and fills in their fields.
func (o *BootOptions) readCFS() error {
	var err error
	if o.Debug, err = o.CFSFlag(CFSDebug); err != nil {
		return err
	}
	if o.Emergency, err = o.CFSFlag(CFSEmergency); err != nil {
		return err
	}
	if v, ok := o.CFS[CFSRebootDelay]; ok {
		d, ok := parseRebootDelay(v)
		if !ok {
			return fmt.Errorf("%s%s=%s: want a whole number of seconds up to %d", CFSPrefix, CFSRebootDelay, shorten(v), int(MaxRebootDelay.Seconds()))
		}
		o.RebootDelay = d
	}
	for name := range o.CFS {
		switch name {
		case CFSDebug, CFSEmergency, CFSRebootDelay:
		default:
			o.UnknownCFS = append(o.UnknownCFS, CFSPrefix+name)
		}
	}
	sort.Strings(o.UnknownCFS)
	return nil
}

// parseRebootDelay reads cfs.reboot-delay's value.
func parseRebootDelay(v string) (time.Duration, bool) {
	n, err := strconv.ParseUint(v, 10, 31)
	if err != nil || time.Duration(n)*time.Second > MaxRebootDelay {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// FailureOptions reads only what cfs-init's failure path needs
// (cfs.emergency, cfs.reboot-delay) from a command line that
// ParseBootOptions refused, so that the operator's choice still holds when
// the line is broken elsewhere. Unusable values give the defaults.
func FailureOptions(c Cmdline) (emergency bool, rebootDelay time.Duration) {
	rebootDelay = DefaultRebootDelay
	if v, ok := c.Get(CFSPrefix + CFSEmergency); ok {
		switch strings.ToLower(v) {
		case "", "1", "yes", "y", "true", "on":
			emergency = true
		}
	}
	if v, ok := c.Get(CFSPrefix + CFSRebootDelay); ok {
		if d, ok := parseRebootDelay(v); ok {
			rebootDelay = d
		}
	}
	return emergency, rebootDelay
}

// CFSFlag reads cfs.<name> as a boolean: absent is false; present without
// a value, or as 1/yes/true/on, is true; 0/no/false/off is false.
func (o BootOptions) CFSFlag(name string) (bool, error) {
	v, ok := o.CFS[name]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(v) {
	case "", "1", "yes", "y", "true", "on":
		return true, nil
	case "0", "no", "n", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s%s=%s: want a boolean (1/0, yes/no, true/false, on/off)", CFSPrefix, name, v)
}

// parseSeconds reads a whole number of seconds, as the kernel's rootdelay=
// and rootwait= take.
func parseSeconds(p Param) (time.Duration, error) {
	n, err := strconv.ParseUint(p.Value, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("%s=%s: want a whole number of seconds", p.Key, shorten(p.Value))
	}
	return time.Duration(n) * time.Second, nil
}
