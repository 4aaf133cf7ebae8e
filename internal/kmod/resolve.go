package kmod

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

// Module is one module file to load.
type Module struct {
	Name string // canonical name ("crc32c_intel")
	Path string // path relative to the module directory, '/'-separated
	// Deps are all modules whose symbols it needs, directly or not, in the
	// order modules.dep lists them: each before its own dependencies, so
	// the reverse is a valid load order.
	Deps []string
	// SoftPre are the modules that a softdep "pre:" (or the fallback rule
	// table) puts before it, in load order.
	SoftPre []string
}

// Result is a resolution with what was left out and why.
type Result struct {
	Modules []Module // load order: every module after everything it needs
	Builtin []string // requested modules that are built into the kernel
	Missing []string // optional requested modules that the tree lacks
	Notes   []string // other remarks: unresolvable softdeps, duplicate files
}

// NoModuleError is a wanted module that is neither in the tree nor built
// into the kernel.
type NoModuleError struct {
	Dir   string   // the module directory, as the caller named it
	Names []string // as the caller spelled them
}

func (e *NoModuleError) Error() string {
	return fmt.Sprintf("%s: no module %s (not in the tree, not built in)", e.Dir, strings.Join(e.Names, ", "))
}

// ResolveOptions tune ResolveFS.
type ResolveOptions struct {
	// Optional lists names among the wanted ones that may be absent from
	// the tree: they are reported in Result.Missing instead of failing.
	Optional []string
	// IgnoreDepFiles computes everything from the modules' .modinfo even
	// when depmod's modules.dep, modules.softdep and modules.alias exist.
	IgnoreDepFiles bool
}

// fallbackPre adds "pre:" softdeps that a module needs to work but that its
// .modinfo (or modules.softdep) might not declare. They are merged with the
// declared ones. Without a crc32c implementation loaded first, jbd2 and
// ext4 fail to mount ("Cannot load crc32c driver") and libcrc32c's users
// (erofs, xfs, btrfs) fail to load with ENOENT: there is no modprobe in the
// initramfs for the kernel's own request_module to call.
var fallbackPre = map[string][]string{
	"ext4":      {"crypto-crc32c"},
	"jbd2":      {"crypto-crc32c"},
	"libcrc32c": {"crypto-crc32c"},
}

// aliasFallback names the module that provides an alias when the alias
// cannot be looked up (no modules.alias, and no selected module claims it),
// and is the preferred choice among several providers that are all not
// selected yet. Generic implementations are listed because they load on
// every CPU; accelerated ones fail with ENODEV where the instructions are
// missing. Keys are normalized ('_' for '-').
var aliasFallback = map[string][]string{
	"crypto_crc32c":  {"crc32c_generic"},
	"crc32c":         {"crc32c_generic"},
	"crypto_sha256":  {"sha256_generic"},
	"sha256":         {"sha256_generic"},
	"blake2b_256":    {"blake2b_generic"},
	"xxhash64":       {"xxhash_generic"},
	"crc64_rocksoft": {"crc64_rocksoft_generic"},
}

// ResolveFS returns the modules to load for want (module names; '-' and
// '_' are the same), with everything they need, in load order. dir is the
// module directory in fsys ("usr/lib/modules/<kver>", or "." for its
// root), so that the modules of a tree that is not on the host, such as a
// commit in a repository, are read without copying them out first.
// Built-in modules are left out; a name that is neither in the tree nor
// built in is an error. The order is deterministic and the same whether or
// not depmod's files exist.
//
// Softdeps: for each "pre:" entry of a selected module (a module name or an
// alias), the selected modules that provide it load before it. If none of
// them is a generic (plain C) implementation and no built-in module
// provides it, the generic provider is added too, since accelerated ones
// fail on CPUs without their instructions. If nothing selected or built in
// provides it, one module that does is added (the aliasFallback choice, a
// *_generic one, or the first by name). "post:" softdeps are not followed.
// The fallbackPre table adds crc32c softdeps that must hold even where a
// module does not declare them. Ties in the load order go to the module
// pulled in by the earlier wanted name, then by name.
func ResolveFS(fsys fs.FS, dir string, want []string, opts ResolveOptions) (Result, error) {
	if !fs.ValidPath(dir) {
		return Result{}, fmt.Errorf("invalid module directory %q", dir)
	}
	return resolveIn(fsys, dir, dir, want, opts)
}

// resolveIn resolves in fsys's directory dir; show names it in messages.
func resolveIn(fsys fs.FS, dir, show string, want []string, opts ResolveOptions) (Result, error) {
	var res Result
	modDir := show
	t, err := openTree(fsys, dir, show, !opts.IgnoreDepFiles)
	if err != nil {
		return res, err
	}
	res.Notes = append(res.Notes, t.notes...)
	optional := make(map[string]bool)
	for _, o := range opts.Optional {
		optional[load.NormalizeName(o)] = true
	}
	var roots, missing []string
	seen := make(map[string]bool)
	for _, w := range want {
		n := load.NormalizeName(strings.TrimSpace(w))
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		switch {
		case t.paths[n] != "":
			roots = append(roots, n)
		case t.builtin[n]:
			res.Builtin = append(res.Builtin, n)
		case optional[n]:
			res.Missing = append(res.Missing, n)
		default:
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return res, &NoModuleError{Dir: modDir, Names: missing}
	}

	r := &resolver{t: t, selected: make(map[string]bool)}
	if err := r.selectAll(roots); err != nil {
		return res, err
	}
	mods, notes, err := r.order(roots)
	if err != nil {
		return res, err
	}
	if err := errors.Join(r.errs...); err != nil {
		return res, err
	}
	res.Modules = mods
	res.Notes = append(res.Notes, notes...)
	return res, nil
}

type resolver struct {
	t        *tree
	selected map[string]bool
	errs     []error // from reading the .modinfo of guessed alias providers
}

// needInfo reports whether .modinfo must be read for selected modules.
func (r *resolver) needInfo() bool {
	return r.t.dep == nil || r.t.soft == nil || r.t.aliases == nil
}

func (r *resolver) hardDeps(name string) []string {
	if r.t.dep != nil {
		return r.t.dep[name]
	}
	return r.t.modinfo(name).Depends
}

func (r *resolver) softPre(name string) []string {
	var pre []string
	if r.t.soft != nil {
		pre = r.t.soft[name]
	} else {
		pre = r.t.modinfo(name).SoftPre
	}
	return dedupe(append(append([]string(nil), pre...), fallbackPre[name]...))
}

// selectAll adds the roots and everything they need (hard dependencies and
// chosen softdeps) to r.selected.
func (r *resolver) selectAll(roots []string) error {
	queue := roots
	for len(queue) > 0 {
		// Hard closure, one breadth-first wave at a time so that the
		// .modinfo reads of a wave run in parallel.
		for len(queue) > 0 {
			var wave []string
			for _, n := range queue {
				if !r.selected[n] {
					r.selected[n] = true
					wave = append(wave, n)
				}
			}
			queue = nil
			if r.needInfo() {
				if err := r.t.fetchInfo(wave); err != nil {
					return err
				}
			}
			for _, n := range wave {
				for _, d := range r.hardDeps(n) {
					if _, ok := r.t.paths[d]; !ok {
						return fmt.Errorf("module %s depends on %s, which is not in %s", n, d, r.t.dir)
					}
					if !r.selected[d] {
						queue = append(queue, d)
					}
				}
			}
		}
		// Softdeps of everything selected so far.
		for _, m := range sortedKeys(r.selected) {
			for _, e := range r.softPre(m) {
				chosen, _ := r.choose(e)
				for _, c := range chosen {
					if !r.selected[c] {
						queue = append(queue, c)
					}
				}
			}
		}
	}
	return nil
}

// selectedProviders returns the selected modules that provide a softdep
// entry (a module name or an alias).
func (r *resolver) selectedProviders(entry string) []string {
	if n := load.NormalizeName(entry); r.t.paths[n] != "" {
		if r.selected[n] {
			return []string{n}
		}
		return nil
	}
	var out []string
	if r.t.aliases != nil {
		for _, m := range r.t.aliases.lookup(entry) {
			if r.selected[m] {
				out = append(out, m)
			}
		}
		return out
	}
	for _, m := range sortedKeys(r.selected) {
		if mi := r.t.modinfo(m); mi != nil && provides(mi, entry) {
			out = append(out, m)
		}
	}
	return out
}

func provides(mi *ModInfo, alias string) bool {
	idx := newAliasIndex()
	for _, a := range mi.Aliases {
		idx.add(a, mi.Name)
	}
	return len(idx.lookup(alias)) > 0
}

// otherProviders returns all loadable modules that provide a softdep entry,
// selected or not, sorted.
func (r *resolver) otherProviders(entry string) []string {
	if n := load.NormalizeName(entry); r.t.paths[n] != "" {
		return []string{n}
	}
	if r.t.aliases != nil {
		return r.t.aliases.lookup(entry)
	}
	// No modules.alias. Reading every module's .modinfo would take
	// seconds, so believe the .modinfo of the modules whose names look
	// like the alias (crypto-crc32c: crc32c*, xxhash64: xxhash*), then
	// the fallback table.
	guesses := r.t.guessProviders(entry)
	if err := r.t.fetchInfo(guesses); err != nil {
		r.errs = append(r.errs, err)
	}
	set := make(map[string]bool)
	for _, m := range guesses {
		if mi := r.t.modinfo(m); mi != nil && provides(mi, entry) {
			set[m] = true
		}
	}
	for _, m := range aliasFallback[normalizeAlias(entry)] {
		if r.t.paths[m] != "" {
			set[m] = true
		}
	}
	return sortedKeys(set)
}

// choose returns the modules that must load before a module that has entry
// as a softdep "pre:", and a note when nothing provides it.
func (r *resolver) choose(entry string) ([]string, string) {
	sel := r.selectedProviders(entry)
	n := load.NormalizeName(entry)
	if r.t.builtin[n] || len(r.t.builtinAliases.lookup(entry)) > 0 {
		return sel, "" // the built-in provider is always there
	}
	if len(sel) > 0 {
		for _, m := range sel {
			if r.isGeneric(entry, m) {
				return sel, ""
			}
		}
		// Only accelerated providers were asked for. They fail with
		// ENODEV on CPUs without their instructions (crc32c_intel
		// without SSE4.2), and then nothing would provide the
		// algorithm: add the generic one as well.
		if g := r.preferred(entry, r.otherProviders(entry), true); g != "" {
			sel = append(sel, g)
			sort.Strings(sel)
		}
		return sel, ""
	}
	cands := r.otherProviders(entry)
	if len(cands) == 0 {
		return nil, "no module provides " + entry
	}
	return []string{r.preferred(entry, cands, false)}, ""
}

// isGeneric reports whether m is a plain-C provider of entry: the
// aliasFallback choice or a *_generic module.
func (r *resolver) isGeneric(entry, m string) bool {
	return slices.Contains(aliasFallback[normalizeAlias(entry)], m) || strings.HasSuffix(m, "_generic")
}

// preferred picks among providers: the aliasFallback choice, then a
// *_generic module, then (unless genericOnly) the first by name.
func (r *resolver) preferred(entry string, cands []string, genericOnly bool) string {
	for _, m := range aliasFallback[normalizeAlias(entry)] {
		if slices.Contains(cands, m) {
			return m
		}
	}
	for _, c := range cands {
		if strings.HasSuffix(c, "_generic") {
			return c
		}
	}
	if genericOnly || len(cands) == 0 {
		return ""
	}
	return cands[0]
}

// order builds the dependency graph of the selected modules and sorts it.
func (r *resolver) order(roots []string) ([]Module, []string, error) {
	var notes []string
	names := sortedKeys(r.selected)
	hard := make(map[string]map[string]bool, len(names)) // module -> its direct or indirect hard deps
	preds := make(map[string]map[string]bool, len(names))
	for _, m := range names {
		hard[m] = make(map[string]bool)
		preds[m] = make(map[string]bool)
		for _, d := range r.hardDeps(m) {
			if d != m {
				hard[m][d] = true
				preds[m][d] = true
			}
		}
	}
	if _, err := kahn(names, preds, nil); err != nil {
		return nil, nil, err
	}
	// Softdep edges, unless one would close a cycle.
	soft := make(map[string][]string)
	for _, m := range names {
		for _, e := range r.softPre(m) {
			chosen, note := r.choose(e)
			if note != "" {
				notes = append(notes, fmt.Sprintf("softdep of %s: %s", m, note))
			}
			for _, c := range chosen {
				if c == m || preds[m][c] {
					continue
				}
				if reaches(preds, c, m) {
					notes = append(notes, fmt.Sprintf("softdep %s before %s ignored: it would make a cycle", c, m))
					continue
				}
				preds[m][c] = true
				soft[m] = append(soft[m], c)
			}
		}
	}
	// Rank: index of the first root that pulls the module in.
	rank := make(map[string]int, len(names))
	for i, root := range roots {
		var walk func(string)
		walk = func(n string) {
			if _, ok := rank[n]; ok {
				return
			}
			rank[n] = i
			for p := range preds[n] {
				walk(p)
			}
		}
		walk(root)
	}
	sorted, err := kahn(names, preds, rank)
	if err != nil {
		return nil, nil, err
	}
	pos := make(map[string]int, len(sorted))
	for i, n := range sorted {
		pos[n] = i
	}
	byPos := func(s []string) {
		sort.Slice(s, func(i, j int) bool { return pos[s[i]] < pos[s[j]] })
	}
	mods := make([]Module, len(sorted))
	for i, n := range sorted {
		// All hard dependencies, indirect ones included (modules.dep
		// already lists them all; .modinfo only the direct ones).
		all := make(map[string]bool)
		var collect func(string)
		collect = func(x string) {
			for d := range hard[x] {
				if !all[d] {
					all[d] = true
					collect(d)
				}
			}
		}
		collect(n)
		deps := sortedKeys(all)
		byPos(deps)
		for a, b := 0, len(deps)-1; a < b; a, b = a+1, b-1 {
			deps[a], deps[b] = deps[b], deps[a]
		}
		sp := dedupe(soft[n])
		byPos(sp)
		mods[i] = Module{Name: n, Path: r.t.paths[n], Deps: deps, SoftPre: sp}
	}
	return mods, dedupe(notes), nil
}

// reaches reports whether from has to as a (transitive) predecessor.
func reaches(preds map[string]map[string]bool, from, to string) bool {
	seen := make(map[string]bool)
	stack := []string{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		for p := range preds[n] {
			stack = append(stack, p)
		}
	}
	return false
}

// kahn sorts topologically, always taking the ready module with the lowest
// (rank, name). Because a module becomes ready exactly when all its
// ancestors are placed, the result is the same for a graph and for its
// transitive closure: modules.dep (all dependencies) and .modinfo (direct
// ones) give the same order.
func kahn(names []string, preds map[string]map[string]bool, rank map[string]int) ([]string, error) {
	done := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for len(out) < len(names) {
		best := ""
		for _, n := range names {
			if done[n] {
				continue
			}
			ready := true
			for p := range preds[n] {
				if !done[p] {
					ready = false
					break
				}
			}
			if !ready {
				continue
			}
			if best == "" || rank[n] < rank[best] || (rank[n] == rank[best] && n < best) {
				best = n
			}
		}
		if best == "" {
			var left []string
			for _, n := range names {
				if !done[n] {
					left = append(left, n)
				}
			}
			return nil, fmt.Errorf("dependency cycle among modules %s", strings.Join(left, ", "))
		}
		done[best] = true
		out = append(out, best)
	}
	return out, nil
}

func dedupe(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
