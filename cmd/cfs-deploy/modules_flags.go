package main

import (
	"flag"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/config"
)

// moduleFlags are the options of the verbs that build an initramfs with
// cfs-init: --modules LIST replaces the default module set (as [deploy]
// modules in config.toml does), --module NAME adds to whichever set.
type moduleFlags struct {
	set   moduleList
	extra stringList
}

const moduleFlagsHelp = `  --modules LIST    kernel modules for a built initramfs, comma-separated,
                    replacing the whole default set, erofs and overlay
                    included: list them too unless the kernel has them
                    built in (default: [deploy] modules in config.toml,
                    else the modules for the sysroot's file system and
                    disk, plus erofs, overlay and loop where needed)
  --module NAME     another module for a built initramfs, added to the set
                    (repeatable), e.g. --module nvme to boot from an NVMe disk`

func addModuleFlags(fs *flag.FlagSet) *moduleFlags {
	m := &moduleFlags{}
	fs.Var(&m.set, "modules", "")
	fs.Var(&m.extra, "module", "")
	return m
}

// replace returns the set that replaces the default one: --modules, else
// [deploy] modules, else nil (the default set).
func (m *moduleFlags) replace(c config.Config) []string {
	if m.set.given {
		return m.set.names
	}
	return c.Deploy.Modules
}

// moduleList is --modules: comma-separated names; given twice, the lists
// are joined. An empty value is an empty set (an image without modules).
type moduleList struct {
	given bool
	names []string
}

func (l *moduleList) String() string { return strings.Join(l.names, ",") }

func (l *moduleList) Set(v string) error {
	l.given = true
	if l.names == nil {
		l.names = []string{}
	}
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if err := config.CheckModuleName(n); err != nil {
			return err
		}
		l.names = append(l.names, n)
	}
	return nil
}
