package deploy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

// ErrBadKarg marks a kernel argument (or an edit) that is refused.
var ErrBadKarg = errors.New("kernel argument refused")

// ownKeys are the arguments rollout writes itself and never takes from
// the user or from an earlier entry.
var ownKeys = map[string]string{
	"root":                     "root= is set by rollout (--root)",
	bootcfg.KeyComposefs:       "composefs= names the deployment's image; rollout writes it",
	bootcfg.KeyComposefsDigest: "composefs.digest= names the deployment's image; rollout writes it",
}

// parseKargs reads --karg values: each may hold several arguments.
func parseKargs(args []string) (bootcfg.Cmdline, error) {
	var c bootcfg.Cmdline
	for _, a := range args {
		p := bootcfg.ParseCmdline(a)
		if len(p) == 0 {
			return nil, fmt.Errorf("empty kernel argument %q: %w", a, ErrBadKarg)
		}
		for _, q := range p {
			if why, ok := ownKeys[q.Key]; ok {
				return nil, fmt.Errorf("kernel argument %q: %s: %w", a, why, ErrBadKarg)
			}
		}
		c = append(c, p...)
	}
	return c, nil
}

// extraKargs returns the arguments of an entry that rollout did not write
// itself: what the admin asked for, which a new deployment inherits.
func extraKargs(e *bootcfg.Entry) bootcfg.Cmdline {
	var out bootcfg.Cmdline
	for _, p := range e.Cmdline() {
		if _, own := ownKeys[p.Key]; own || p.Key == "rw" && !p.HasValue {
			continue
		}
		out = append(out, p)
	}
	return out
}

// newCmdline composes a deployment's kernel command line: root=, rw and
// composefs=, then the arguments base's entry had (none without a base),
// then extra. root= is rootSpec, else base's, else detected from the
// sysroot's file system. The finished line is checked with cfs-init's own
// parser, so nothing is written that cfs-init would refuse to boot.
func (h *Host) newCmdline(c *repo.Commit, base *Deployment, rootSpec string, extra bootcfg.Cmdline, insecure bool) (bootcfg.Cmdline, error) {
	var inherited bootcfg.Cmdline
	if base != nil && base.Entry != nil {
		inherited = extraKargs(base.Entry)
		if rootSpec == "" {
			rootSpec, _ = base.Entry.Cmdline().Get("root")
		}
	}
	if rootSpec == "" {
		var err error
		if rootSpec, err = DetectRoot(h.Path); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoRootDevice, err)
		}
	}
	if _, err := bootcfg.ParseRoot(rootSpec); err != nil {
		return nil, fmt.Errorf("root=%s: %w", rootSpec, err)
	}
	var cl bootcfg.Cmdline
	if err := cl.Replace("root", rootSpec); err != nil {
		return nil, fmt.Errorf("root=%s: %w", rootSpec, err)
	}
	args := []string{"rw", bootcfg.ComposefsArg(c.Image, insecure)}
	for _, p := range append(inherited, extra...) {
		args = append(args, p.String())
	}
	for _, a := range args {
		if err := cl.Add(a); err != nil {
			return nil, fmt.Errorf("kernel argument %q: %w", a, err)
		}
	}
	if err := checkCmdline(cl); err != nil {
		return nil, err
	}
	return cl, nil
}

// checkCmdline refuses a command line cfs-init would refuse at boot.
func checkCmdline(cl bootcfg.Cmdline) error {
	opts, err := bootcfg.ParseBootOptions(cl)
	if err != nil {
		return fmt.Errorf("cfs-init would refuse to boot this command line: %w: %w", err, ErrBadKarg)
	}
	if len(opts.Images) != 1 {
		return fmt.Errorf("the command line names %d composefs images, want 1: %w", len(opts.Images), ErrBadKarg)
	}
	return nil
}

// KargsEdit is one change to a deployment's kernel arguments.
type KargsEdit struct {
	Op  string // "append", "delete" or "replace"
	Arg string // ARG, KEY or KEY=VALUE
}

// applyKargs applies edits to a command line in order. Append adds an
// argument unless an identical one is there; delete removes an exact
// KEY=VALUE, or every argument named KEY; replace sets KEY=VALUE in place
// of every KEY. Edits touching what rollout owns are refused, and so is a
// delete that matches nothing (a typo must not look like success).
func applyKargs(cl bootcfg.Cmdline, edits []KargsEdit) (bootcfg.Cmdline, error) {
	out := append(bootcfg.Cmdline(nil), cl...)
	for _, ed := range edits {
		params := bootcfg.ParseCmdline(ed.Arg)
		if len(params) != 1 {
			return nil, fmt.Errorf("--%s %q: give exactly one argument: %w", ed.Op, ed.Arg, ErrBadKarg)
		}
		p := params[0]
		if why, ok := ownKeys[p.Key]; ok || p.Key == "rw" || p.Key == "ro" {
			if !ok {
				why = "the root is mounted rw; cfs-init needs a writable /etc and /var"
			}
			return nil, fmt.Errorf("--%s %q: %s: %w", ed.Op, ed.Arg, why, ErrBadKarg)
		}
		switch ed.Op {
		case "append":
			if err := out.Add(ed.Arg); err != nil {
				return nil, fmt.Errorf("--append %q: %v: %w", ed.Arg, err, ErrBadKarg)
			}
		case "delete":
			n := 0
			if p.HasValue || strings.Contains(ed.Arg, "=") {
				n = out.RemoveExact(ed.Arg)
			} else {
				n = out.Remove(p.Key)
			}
			if n == 0 {
				return nil, fmt.Errorf("--delete %q: no such argument on the command line: %w", ed.Arg, ErrBadKarg)
			}
		case "replace":
			if !p.HasValue {
				return nil, fmt.Errorf("--replace %q: want KEY=VALUE: %w", ed.Arg, ErrBadKarg)
			}
			if err := out.Replace(p.Key, p.Value); err != nil {
				return nil, fmt.Errorf("--replace %q: %v: %w", ed.Arg, err, ErrBadKarg)
			}
		default:
			return nil, fmt.Errorf("unknown kernel argument edit %q", ed.Op)
		}
	}
	return out, nil
}
