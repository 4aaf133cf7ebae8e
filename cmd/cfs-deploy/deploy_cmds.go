package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/config"
	"github.com/cfs-deploy/cfs-deploy/internal/deploy"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

const hostOptionsHelp = `  --sysroot DIR     the physical root holding composefs/ and state/ (default:
                    the repository's parent, /sysroot on a booted system)
  --repo DIR        the repository (default <sysroot>/composefs, else the
                    configured one)
  --boot DIR        the boot directory, /boot or the ESP (default: [deploy]
                    boot in config.toml, else what rollout recorded, else
                    <sysroot>/boot)`

func init() {
	register("status", command{
		summary: "list the deployments in boot order",
		run:     runStatus,
		usage: usageText(`Usage: cfs-deploy status [--sysroot DIR] [--boot DIR] [--json]

Lists the deployments in the order the boot loader tries them: index 0 is
the default, index 1 the rollback. On the running system the deployment it
booted is marked with '*' (from cfs-init's /run/cfs-deploy/booted.json and
/proc/cmdline); on an offline sysroot nothing is booted.

Options:
` + hostOptionsHelp + `
  --json            print {"deployments": [...]} with index, stateroot, branch,
                    commit, image, version, subject, kernel, kargs, entry and
                    the flags booted, default, rollback, pinned, staged`),
	})
	register("rollback", command{
		summary: "make the rollback deployment the default",
		run:     runRollback,
		usage: usageText(`Usage: cfs-deploy rollback [--sysroot DIR] [--boot DIR]

Makes the rollback deployment (index 1) the default and the former default
the rollback; running it twice returns to where it started. Only the
rollback deployment's boot entry is rewritten (one atomic rename). Reboot
to run it.

Options:
` + hostOptionsHelp),
	})
	register("undeploy", command{
		summary: "remove a deployment",
		run:     runUndeploy,
		usage: usageText(`Usage: cfs-deploy undeploy [--sysroot DIR] [--boot DIR] INDEX

Removes the deployment INDEX (see status): its boot entry first, then its
state directory (its /etc) and the kernel and initramfs files no other
entry uses. The booted deployment and the only deployment are refused.

Options:
` + hostOptionsHelp),
	})
	for _, pin := range []bool{true, false} {
		name, what := "pin", "Pins"
		if !pin {
			name, what = "unpin", "Unpins"
		}
		pin := pin
		register(name, command{
			summary: strings.ToLower(what[:len(what)-1]) + " a deployment (pinned ones are never removed by retention)",
			run:     func(prog string, args []string) error { return runPin(prog, args, pin) },
			usage: usageText(`Usage: cfs-deploy ` + name + ` [--sysroot DIR] [--boot DIR] INDEX

` + what + ` the deployment INDEX (see status). Retention after a rollout never
removes a pinned deployment; undeploy still can.

Options:
` + hostOptionsHelp),
		})
	}
	register("kargs", command{
		summary: "show or edit a deployment's kernel arguments",
		run:     runKargs,
		usage: usageText(`Usage: cfs-deploy kargs [--deployment INDEX] [--append ARG]... [--delete ARG]...
                      [--replace KEY=VALUE]... [--sysroot DIR] [--boot DIR] [--json]

Without edits, prints the kernel command line of a deployment (default:
the staged deployment if there is one, else the default, index 0). With edits, applies them in the order
given and writes the deployment's boot entry anew, atomically:
  --append ARG         add ARG unless the same argument is there
  --delete KEY=VALUE   remove that exact argument
  --delete KEY         remove every argument named KEY
  --replace KEY=VALUE  set KEY to VALUE (in place of every KEY)
root=, composefs= and rw/ro belong to rollout and cannot be edited here,
and the result must pass cfs-init's own checks (init= absolute,
rootwait=N, cfs.reboot-delay=N, ...), else nothing is written. New
deployments inherit the arguments of the one they are rolled out from.

Options:
  --deployment INDEX  which deployment (default: the staged one, else 0)
` + hostOptionsHelp + `
  --json            print {"index": N, "entry": ..., "kargs": ...}`),
	})
	register("cleanup", command{
		summary: "remove state and boot files no deployment uses",
		run:     runCleanup,
		usage: usageText(`Usage: cfs-deploy cleanup [--sysroot DIR] [--boot DIR] [--json]

Removes what no deployment references: state directories without a boot
entry (left by a crash or an interrupted undeploy), kernels and initramfs
images in <boot>/cfs-deploy that no entry names, and temporaries of
interrupted commands. Refuses to run when the boot directory holds no
cfs-deploy entry but state directories exist (a wrong --boot).

Options:
` + hostOptionsHelp + `
  --json            print what was removed as JSON`),
	})
	register("mark-good", command{
		summary: "mark the running deployment's boot good (drop its boot counter)",
		run:     runMarkGood,
		usage: usageText(`Usage: cfs-deploy mark-good [--sysroot DIR] [--boot DIR]

On the running system, renames the booted deployment's entry to drop its
boot counter (NAME+1-1.conf -> NAME.conf), so the boot loader stops
counting its tries and keeps booting it. Call it once the system is known
to work: cfs-deploy-mark-good.service does so after boot-complete.target
on systemd; another init calls it at the end of its boot. An entry without
a counter is left alone.

Options:
` + hostOptionsHelp),
	})
	register("finalize", command{
		summary: "make the staged deployment the default (at shutdown)",
		run:     runFinalize,
		usage: usageText(`Usage: cfs-deploy finalize [--sysroot DIR] [--boot DIR] [--json]

Finishes "rollout --stage": builds the staged deployment's /etc again from
the new image and the running system's /etc as it is now, then writes its
entry and makes it the default. cfs-deploy-finalize.service runs it at
shutdown; it can be run by hand. Without a staged deployment it does
nothing. If it fails, the old default stays, the staged deployment is
dropped, and the next "cfs-deploy status" says why.

Options:
` + hostOptionsHelp + `
  --json            print the result as JSON`),
	})
	register("etc-diff", command{
		summary: "list a deployment's local /etc changes",
		run:     runEtcDiff,
		usage: usageText(`Usage: cfs-deploy etc-diff [--sysroot DIR] [--boot DIR] [--json] [INDEX]

Lists the local changes of a deployment's /etc (default: the booted
deployment, else the default) against its image's /etc, one per line:
  M path   modified (content, mode, owner, xattrs, symlink target or type)
  A path   added locally
  D path   deleted locally
These are the changes a rollout carries into the next deployment.

Options:
` + hostOptionsHelp + `
  --json            print [{"kind": "M", "path": ..., "what": ...}, ...]`),
	})
}

// hostFlags are the options every deployment verb takes.
type hostFlags struct {
	sysroot, boot string
}

func addHostFlags(fs *flag.FlagSet) *hostFlags {
	hf := &hostFlags{}
	repoFlags(fs)
	fs.StringVar(&hf.sysroot, "sysroot", "", "")
	fs.StringVar(&hf.boot, "boot", "", "")
	return hf
}

// open finds the repository and the sysroot. The repository's path is
// --repo, else <--sysroot>/composefs, else the configured one; the
// sysroot is its parent unless --sysroot says otherwise. Without
// needRepo a missing repository is not an error (status, rollback and the
// like only read entries and state).
func (hf *hostFlags) open(needRepo bool) (*deploy.Host, config.Config, error) {
	c, err := loadConfig()
	if err != nil {
		return nil, c, err
	}
	repoPath := global.repo
	if repoPath == "" && hf.sysroot != "" {
		repoPath = filepath.Join(hf.sysroot, "composefs")
	}
	if repoPath == "" {
		repoPath = c.Repo
	}
	r, err := repo.Open(repoPath, repo.OpenOptions{})
	if err != nil {
		if needRepo || !errors.Is(err, repo.ErrNotRepository) {
			return nil, c, err
		}
		r = nil
	}
	sysrootPath := hf.sysroot
	if sysrootPath == "" {
		sysrootPath = filepath.Dir(filepath.Clean(repoPath))
	}
	boot := hf.boot
	if boot == "" {
		boot = c.Deploy.Boot
	}
	h, err := deploy.OpenHost(deploy.HostOptions{Sysroot: sysrootPath, Boot: boot, Repo: r})
	if err != nil {
		if r != nil {
			r.Close()
		}
		return nil, c, err
	}
	return h, c, nil
}

func closeHost(h *deploy.Host) {
	if h.Repo != nil {
		h.Repo.Close()
	}
}

// openVerb parses a deployment verb's arguments with fs (to which
// addHostFlags gave the host options and the caller its own) and
// operands, then opens the host; the caller closes it with closeHost.
func openVerb(fs *flag.FlagSet, hf *hostFlags, args []string, operands func(*flag.FlagSet, []string) error, needRepo bool) (*deploy.Host, error) {
	if err := operands(fs, args); err != nil {
		return nil, err
	}
	h, _, err := hf.open(needRepo)
	return h, err
}

// parseIndex reads an INDEX operand.
func parseIndex(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, cliutil.Usagef("INDEX must be a deployment's number from status (0, 1, ...), not %q", s)
	}
	return n, nil
}

// deploymentJSON is one deployment as status --json prints it.
type deploymentJSON struct {
	Index     int       `json:"index"`
	Stateroot string    `json:"stateroot"`
	Branch    string    `json:"branch"`
	Commit    string    `json:"commit"`
	Image     string    `json:"image"`
	Version   string    `json:"version"`
	Subject   string    `json:"subject"`
	Kernel    string    `json:"kernel"`
	Kargs     string    `json:"kargs"`
	Entry     string    `json:"entry"`
	Title     string    `json:"title"`
	Created   time.Time `json:"created,omitzero"`
	Booted    bool      `json:"booted"`
	Default   bool      `json:"default"`
	Rollback  bool      `json:"rollback"`
	Pinned    bool      `json:"pinned"`
	Staged    bool      `json:"staged"`
	Bad       bool      `json:"bad"`
	// TriesLeft is the boot counter's tries left; absent when the
	// entry is not counted.
	TriesLeft *int   `json:"tries_left,omitempty"`
	Problem   string `json:"problem,omitempty"`
}

func toJSON(d *deploy.Deployment) deploymentJSON {
	j := deploymentJSON{
		Index: d.Index, Stateroot: d.Stateroot, Booted: d.Booted, Default: d.Default,
		Rollback: d.Rollback, Pinned: d.Pinned, Staged: d.Staged, Bad: d.Bad(), Problem: d.Problem,
	}
	if d.Problem == "" || d.Image != ([32]byte{}) {
		j.Image = d.Image.String()
	}
	if o := d.Origin; o != nil {
		j.Branch, j.Version, j.Subject, j.Kernel, j.Created = o.Branch, o.Version, o.Subject, o.Kernel, o.Created
		if !o.Commit.IsZero() {
			j.Commit = o.Commit.String()
		}
	}
	if e := d.Entry; e != nil {
		j.Entry, j.Title, j.Kargs = e.File, e.Title, strings.Join(e.Options, " ")
		if e.Counter != nil {
			left := e.Counter.Left
			j.TriesLeft = &left
		}
	}
	return j
}

func runStatus(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	asJSON := fs.Bool("json", false, "")
	h, err := openVerb(fs, hf, args, noOperands, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	ds, err := h.Status()
	if err != nil {
		return err
	}
	failure, err := h.FinalizeFailure()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: warning: %v\n", prog, err)
	}
	if *asJSON {
		out := struct {
			Deployments []deploymentJSON         `json:"deployments"`
			Finalize    *sysroot.FinalizeFailure `json:"finalize_failure,omitempty"`
		}{Deployments: []deploymentJSON{}, Finalize: failure}
		for _, d := range ds.All() {
			out.Deployments = append(out.Deployments, toJSON(d))
		}
		return printJSON(out)
	}
	if len(ds.All()) == 0 {
		fmt.Printf("no deployments in %s\n", h.Entries())
	}
	for _, d := range ds.All() {
		printDeployment(d)
	}
	if failure != nil {
		fmt.Printf("LAST FINALIZE FAILED at %s: staged deployment %s was not made the default: %s\n",
			failure.Time.Format(time.RFC3339), short(failure.Image.String()), failure.Error)
	}
	if ds.EntryErrors != nil {
		fmt.Fprintf(os.Stderr, "%s: warning: %v\n", prog, ds.EntryErrors)
	}
	if ds.Running && ds.Booted == nil {
		fmt.Fprintf(os.Stderr, "%s: warning: the running system booted none of these deployments\n", prog)
	}
	return nil
}

// printDeployment prints one deployment in three lines.
func printDeployment(d *deploy.Deployment) {
	j := toJSON(d)
	mark := " "
	if d.Booted {
		mark = "*"
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{d.Default, "default"}, {d.Rollback, "rollback"}, {d.Booted, "booted"}, {d.Pinned, "pinned"}, {d.Staged, "staged"}, {d.Bad(), "BAD"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	if j.TriesLeft != nil && !d.Bad() {
		flags = append(flags, fmt.Sprintf("%d tries left", *j.TriesLeft))
	}
	what := strings.TrimSpace(j.Branch + " " + j.Version)
	if j.Subject != "" {
		what += fmt.Sprintf(" %q", j.Subject)
	}
	fmt.Printf("%s %d %-24s %s\n", mark, d.Index, strings.Join(flags, ","), what)
	fmt.Printf("      image %s  commit %.12s  stateroot %s  kernel %s\n", short(j.Image), j.Commit, j.Stateroot, j.Kernel)
	// composefs= repeats the image; the rest is what an admin edits.
	var kargs []string
	for _, a := range strings.Fields(j.Kargs) {
		if !strings.HasPrefix(a, "composefs=") && !strings.HasPrefix(a, "composefs.digest=") {
			kargs = append(kargs, a)
		}
	}
	fmt.Printf("      entry %s  kargs %s\n", j.Entry, strings.Join(kargs, " "))
	if d.Problem != "" {
		fmt.Printf("      PROBLEM: %s\n", d.Problem)
	}
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// isSet reports whether the option name was given.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// noOperands parses a command that takes none.
func noOperands(fs *flag.FlagSet, args []string) error {
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 0 {
		return cliutil.Usagef("unexpected operand %q", ops[0])
	}
	return nil
}

// oneIndex parses a command that takes exactly one INDEX operand.
func oneIndex(fs *flag.FlagSet, args []string) (int, error) {
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return 0, err
	}
	if len(ops) != 1 {
		return 0, cliutil.Usagef("name one deployment by its INDEX from status")
	}
	return parseIndex(ops[0])
}

func runRollback(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	h, err := openVerb(fs, hf, args, noOperands, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	rb, err := h.Rollback()
	if errors.Is(err, deploy.ErrOnlyOne) {
		return fmt.Errorf("%w: nothing to roll back to", err)
	}
	if err != nil {
		return err
	}
	if !rb.Discarded.IsZero() {
		fmt.Printf("discarded the staged deployment %s: it will not be finalized\n", short(rb.Discarded.String()))
	}
	j := toJSON(rb.Default)
	fmt.Printf("default is now %s %s (image %s); the former default is the rollback. Reboot to use it.\n", j.Branch, j.Version, short(j.Image))
	return nil
}

func runUndeploy(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	var index int
	h, err := openVerb(fs, hf, args, func(fs *flag.FlagSet, args []string) (err error) {
		index, err = oneIndex(fs, args)
		return err
	}, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	rm, err := h.Undeploy(index)
	switch {
	case errors.Is(err, deploy.ErrBooted):
		return fmt.Errorf("%w; roll out or roll back to another deployment and reboot first", err)
	case errors.Is(err, deploy.ErrNoDeployment):
		return fmt.Errorf("%w; see cfs-deploy status", err)
	case err != nil:
		return err
	}
	fmt.Printf("removed deployment %d: entry %s, state %v, %d boot files\n", index, rm.Entry, rm.State, len(rm.Files))
	return nil
}

func runPin(prog string, args []string, pin bool) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	var index int
	h, err := openVerb(fs, hf, args, func(fs *flag.FlagSet, args []string) (err error) {
		index, err = oneIndex(fs, args)
		return err
	}, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	d, err := h.SetPinned(index, pin)
	if err != nil {
		return err
	}
	state := "pinned"
	if !pin {
		state = "unpinned"
	}
	fmt.Printf("deployment %d (image %s) %s\n", index, short(d.Image.String()), state)
	return nil
}

// kargsEdits collects --append, --delete and --replace in command line
// order.
type kargsEdits []deploy.KargsEdit

type kargsOp struct {
	op    string
	edits *kargsEdits
}

func (k kargsOp) String() string { return "" }
func (k kargsOp) Set(v string) error {
	*k.edits = append(*k.edits, deploy.KargsEdit{Op: k.op, Arg: v})
	return nil
}

func runKargs(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	index := fs.Int("deployment", -1, "")
	asJSON := fs.Bool("json", false, "")
	var edits kargsEdits
	for _, op := range []string{"append", "delete", "replace"} {
		fs.Var(kargsOp{op, &edits}, op, "")
	}
	if err := noOperands(fs, args); err != nil {
		return err
	}
	if isSet(fs, "deployment") && *index < 0 {
		return cliutil.Usagef("--deployment must be a deployment's number from status (0, 1, ...)")
	}
	h, _, err := hf.open(false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	d, cl, err := h.EditKargs(*index, edits)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(map[string]any{"index": d.Index, "entry": d.Entry.File, "kargs": cl.String()})
	}
	if len(edits) > 0 {
		fmt.Fprintf(os.Stderr, "wrote %s; the new arguments take effect at the next boot of deployment %d\n", filepath.Join(h.Entries(), d.Entry.File), d.Index)
	}
	fmt.Println(cl.String())
	return nil
}

func runCleanup(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	asJSON := fs.Bool("json", false, "")
	h, err := openVerb(fs, hf, args, noOperands, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	rep, err := h.Cleanup()
	if errors.Is(err, deploy.ErrNoEntries) {
		return err
	}
	if rep != nil {
		if *asJSON {
			if perr := printJSON(rep); perr != nil {
				return perr
			}
		} else {
			for _, s := range rep.States {
				fmt.Printf("removed state %s\n", s)
			}
			for _, f := range rep.BootFiles {
				fmt.Printf("removed boot file %s\n", f)
			}
			fmt.Printf("cleanup: %d state directories, %d boot files, %d temporaries removed\n", len(rep.States), len(rep.BootFiles), rep.Temps)
		}
	}
	return err
}

func runEtcDiff(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	asJSON := fs.Bool("json", false, "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 1 {
		return cliutil.Usagef("name at most one deployment INDEX")
	}
	h, _, err := hf.open(true)
	if err != nil {
		return err
	}
	defer closeHost(h)
	index := -1
	if len(ops) == 1 {
		if index, err = parseIndex(ops[0]); err != nil {
			return err
		}
	} else {
		ds, err := h.Status()
		if err != nil {
			return err
		}
		index = 0
		if ds.Booted != nil {
			index = ds.Booted.Index
		}
	}
	_, changes, err := h.EtcDiff(index)
	if err != nil {
		return err
	}
	if *asJSON {
		type change struct {
			Kind string `json:"kind"`
			Path string `json:"path"`
			What string `json:"what,omitempty"`
		}
		out := []change{}
		for _, c := range changes {
			out = append(out, change{c.Kind.String(), c.Path, c.What})
		}
		return printJSON(out)
	}
	for _, c := range changes {
		fmt.Println(c.String())
	}
	return nil
}

func runMarkGood(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	h, err := openVerb(fs, hf, args, noOperands, false)
	if err != nil {
		return err
	}
	defer closeHost(h)
	entry, counted, err := h.MarkGood()
	if err != nil {
		return err
	}
	if counted {
		fmt.Printf("marked good: %s\n", entry)
	} else {
		fmt.Printf("%s is not counted; nothing to do\n", entry)
	}
	return nil
}

func runFinalize(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	hf := addHostFlags(fs)
	asJSON := fs.Bool("json", false, "")
	h, err := openVerb(fs, hf, args, noOperands, true)
	if err != nil {
		return err
	}
	defer closeHost(h)
	if !*asJSON {
		h.Log = os.Stderr
	}
	fin, err := h.Finalize()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(fin)
	}
	if fin == nil {
		fmt.Println("no staged deployment")
		return nil
	}
	for _, w := range fin.Warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", prog, w)
	}
	if fin.Merge != nil {
		fmt.Println(fin.Merge.String())
	}
	fmt.Printf("finalized %s: entry %s is the default\n", short(fin.Image.String()), fin.Entry)
	return nil
}
