package kmod

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteModulesDep writes mods as a modules.dep file: one line per module,
// "path: dep-path dep-path ...", paths relative to the module directory,
// dependencies listed as Module.Deps orders them (modprobe loads them from
// the last to the first). Every dependency must be among mods.
func WriteModulesDep(w io.Writer, mods []Module) error {
	paths := make(map[string]string, len(mods))
	for _, m := range mods {
		paths[m.Name] = m.Path
	}
	bw := bufio.NewWriter(w)
	for _, m := range mods {
		var b strings.Builder
		b.WriteString(m.Path)
		b.WriteByte(':')
		for _, d := range m.Deps {
			p, ok := paths[d]
			if !ok {
				return fmt.Errorf("modules.dep: %s needs %s, which is not in the set", m.Name, d)
			}
			b.WriteByte(' ')
			b.WriteString(p)
		}
		b.WriteByte('\n')
		bw.WriteString(b.String())
	}
	return bw.Flush()
}

// WriteLoadList writes the load list that load.ReadLoadList reads: the
// module paths, one per line, in the order of mods (which must be a load
// order, as Resolve returns).
func WriteLoadList(w io.Writer, mods []Module) error {
	bw := bufio.NewWriter(w)
	for _, m := range mods {
		if strings.ContainsAny(m.Path, "\n\r") {
			return fmt.Errorf("load list: bad module path %q", m.Path)
		}
		bw.WriteString(m.Path)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
