package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

// tree indexes one module directory. The files depmod writes are used when
// present (and wanted); each missing one is replaced by what the modules'
// .modinfo sections say, read lazily for the modules a resolution touches.
type tree struct {
	fsys  fs.FS             // holds the module directory
	root  string            // the module directory as a path in fsys
	dir   string            // the module directory as messages name it
	paths map[string]string // canonical name -> path relative to dir
	notes []string

	dep     map[string][]string // modules.dep: name -> all its dependencies; nil: use modinfo
	soft    map[string][]string // modules.softdep: name -> pre entries; nil: use modinfo
	aliases *aliasIndex         // modules.alias; nil: use the modinfo of selected modules

	builtin        map[string]bool // modules.builtin
	builtinAliases *aliasIndex     // modules.builtin.modinfo

	mu   sync.Mutex
	info map[string]*ModInfo

	sortedNames []string // keys of paths, sorted; built on first use
}

// aliasIndex maps (normalized) alias patterns to module names.
type aliasIndex struct {
	literal map[string][]string
	globs   []aliasEntry
}

type aliasEntry struct{ pattern, module string }

func newAliasIndex() *aliasIndex {
	return &aliasIndex{literal: make(map[string][]string)}
}

func (a *aliasIndex) add(pattern, module string) {
	p := normalizeAlias(pattern)
	if strings.ContainsAny(p, "*?[") {
		a.globs = append(a.globs, aliasEntry{p, module})
		return
	}
	for _, m := range a.literal[p] {
		if m == module {
			return
		}
	}
	a.literal[p] = append(a.literal[p], module)
}

// lookup returns the modules whose aliases match alias, sorted.
func (a *aliasIndex) lookup(alias string) []string {
	if a == nil {
		return nil
	}
	al := normalizeAlias(alias)
	set := make(map[string]bool)
	for _, m := range a.literal[al] {
		set[m] = true
	}
	for _, g := range a.globs {
		if ok, _ := path.Match(g.pattern, al); ok {
			set[g.module] = true
		}
	}
	return sortedKeys(set)
}

// normalizeAlias treats '-' and '_' alike, as modprobe does, except inside
// [...] where '-' is a range.
func normalizeAlias(s string) string {
	b := []byte(s)
	inBracket := false
	for i, c := range b {
		switch {
		case c == '[':
			inBracket = true
		case c == ']':
			inBracket = false
		case c == '-' && !inBracket:
			b[i] = '_'
		}
	}
	return string(b)
}

// openTree indexes the module directory root of fsys; dir names it in
// messages.
func openTree(fsys fs.FS, root, dir string, useDepFiles bool) (*tree, error) {
	st, err := fs.Stat(fsys, root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, unwrapPathError(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	t := &tree{fsys: fsys, root: root, dir: dir, info: make(map[string]*ModInfo)}
	if f, err := fsys.Open(t.file("modules.builtin")); err == nil {
		t.builtin, err = load.ParseBuiltin(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		t.builtin = map[string]bool{}
	} else {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if t.builtinAliases, err = t.readBuiltinModinfo("modules.builtin.modinfo"); err != nil {
		return nil, err
	}
	if useDepFiles {
		if err := t.readDepFiles(); err != nil {
			return nil, err
		}
	}
	if t.dep == nil {
		if err := t.scan(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// file returns the fsys path of a file of the module directory.
func (t *tree) file(rel string) string { return path.Join(t.root, rel) }

// unwrapPathError drops the *fs.PathError wrapper, whose path is relative
// to an fs.FS and would read as a second, different file name.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readDepFiles reads modules.dep, modules.softdep and modules.alias where
// they exist.
func (t *tree) readDepFiles() error {
	data, err := fs.ReadFile(t.fsys, t.file("modules.dep"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	t.paths = make(map[string]string)
	t.dep = make(map[string][]string)
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%s/modules.dep:%d: no ':'", t.dir, i+1)
		}
		rel, err := t.relPath(mod)
		if err != nil {
			return fmt.Errorf("%s/modules.dep:%d: %w", t.dir, i+1, err)
		}
		name := load.ModuleName(rel)
		if _, dup := t.paths[name]; dup {
			continue // depmod lists the winning file first
		}
		t.paths[name] = rel
		var names []string
		for _, d := range strings.Fields(deps) {
			names = append(names, load.ModuleName(d))
		}
		t.dep[name] = names
	}
	for name, deps := range t.dep {
		for _, d := range deps {
			if _, ok := t.paths[d]; !ok {
				return fmt.Errorf("%s/modules.dep: %s needs %s, which has no line of its own", t.dir, name, d)
			}
		}
	}

	if f, err := t.fsys.Open(t.file("modules.softdep")); err == nil {
		t.soft = make(map[string][]string)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			w := strings.Fields(sc.Text())
			if len(w) < 3 || w[0] != "softdep" {
				continue
			}
			pre, _ := ParseSoftdep(strings.Join(w[2:], " "))
			name := load.NormalizeName(w[1])
			t.soft[name] = append(t.soft[name], pre...)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	if f, err := t.fsys.Open(t.file("modules.alias")); err == nil {
		t.aliases = newAliasIndex()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			w := strings.Fields(sc.Text())
			if len(w) == 3 && w[0] == "alias" {
				t.aliases.add(w[1], load.NormalizeName(w[2]))
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// relPath turns a modules.dep path into one relative to the module
// directory (old depmod versions wrote absolute paths).
func (t *tree) relPath(p string) (string, error) {
	if path.IsAbs(p) {
		marker := "/" + path.Base(filepath.ToSlash(t.dir)) + "/"
		i := strings.Index(p, marker)
		if i < 0 {
			return "", fmt.Errorf("%q: absolute path outside the module directory", p)
		}
		p = p[i+len(marker):]
	}
	if path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." {
		return "", fmt.Errorf("%q: not a clean relative path", p)
	}
	if _, ok := load.TrimModuleExt(path.Base(p)); !ok {
		return "", fmt.Errorf("%q: not a module file", p)
	}
	return p, nil
}

// scan indexes the module files below the module directory. When two files
// give the same module name, the one depmod would pick by default wins:
// updates/ first, then kernel/, then anything else; ties by path.
func (t *tree) scan() error {
	t.paths = make(map[string]string)
	err := fs.WalkDir(t.fsys, t.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if _, ok := load.TrimModuleExt(d.Name()); !ok {
			return nil
		}
		rel := p
		if t.root != "." {
			rel = strings.TrimPrefix(p, t.root+"/")
		}
		name := load.ModuleName(rel)
		if old, dup := t.paths[name]; dup {
			win, lose := old, rel
			if searchRank(rel) < searchRank(old) || (searchRank(rel) == searchRank(old) && rel < old) {
				win, lose = rel, old
			}
			t.paths[name] = win
			t.notes = append(t.notes, fmt.Sprintf("module %s: using %s, not %s", name, win, lose))
			return nil
		}
		t.paths[name] = rel
		return nil
	})
	sort.Strings(t.notes)
	return err
}

func searchRank(rel string) int {
	switch {
	case strings.HasPrefix(rel, "updates/"):
		return 0
	case strings.HasPrefix(rel, "kernel/"):
		return 1
	}
	return 2
}

// readBuiltinModinfo collects the aliases of built-in modules from
// modules.builtin.modinfo (NUL-separated "module.key=value" strings).
func (t *tree) readBuiltinModinfo(name string) (*aliasIndex, error) {
	idx := newAliasIndex()
	data, err := fs.ReadFile(t.fsys, t.file(name))
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	} else if err != nil {
		return nil, err
	}
	for _, ent := range bytes.Split(data, []byte{0}) {
		key, val, ok := strings.Cut(string(ent), "=")
		if !ok {
			continue
		}
		mod, k, ok := strings.Cut(key, ".")
		if ok && k == "alias" {
			idx.add(val, load.NormalizeName(mod))
		}
	}
	return idx, nil
}

// modinfo returns the cached .modinfo of a module.
func (t *tree) modinfo(name string) *ModInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info[name]
}

// fetchInfo reads the .modinfo of the named modules that are not cached
// yet, in parallel (xz decoding dominates the build time).
func (t *tree) fetchInfo(names []string) error {
	var todo []string
	t.mu.Lock()
	for _, n := range names {
		if t.info[n] == nil {
			todo = append(todo, n)
		}
	}
	t.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	jobs := make(chan string)
	errs := make([]error, len(todo))
	idx := make(map[string]int, len(todo))
	for i, n := range todo {
		idx[n] = i
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				mi, err := readModInfoFS(t.fsys, t.file(t.paths[n]), filepath.Join(t.dir, filepath.FromSlash(t.paths[n])))
				if err != nil {
					errs[idx[n]] = err
					continue
				}
				if mi.Name != n {
					errs[idx[n]] = fmt.Errorf("%s: .modinfo says name=%s, file name says %s", t.paths[n], mi.Name, n)
					continue
				}
				t.mu.Lock()
				t.info[n] = &mi
				t.mu.Unlock()
			}
		}()
	}
	for _, n := range todo {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// guessProviders returns the modules whose names start with the stem of an
// alias: "crypto-crc32c" -> crc32c*, "xxhash64" -> xxhash*, "blake2b-256"
// -> blake2b*. Their .modinfo tells whether they really provide it.
func (t *tree) guessProviders(alias string) []string {
	a := load.NormalizeName(alias)
	a = strings.TrimPrefix(a, "crypto_")
	if i := strings.IndexByte(a, '_'); i >= 0 {
		a = a[:i]
	}
	stems := []string{a}
	if s := strings.TrimRight(a, "0123456789"); s != a {
		stems = append(stems, s)
	}
	if t.sortedNames == nil {
		t.sortedNames = sortedKeys(t.paths)
	}
	set := make(map[string]bool)
	for _, stem := range stems {
		if len(stem) < 3 || strings.ContainsAny(stem, "*?[:") {
			continue
		}
		i := sort.SearchStrings(t.sortedNames, stem)
		for ; i < len(t.sortedNames) && strings.HasPrefix(t.sortedNames[i], stem); i++ {
			set[t.sortedNames[i]] = true
		}
	}
	return sortedKeys(set)
}
