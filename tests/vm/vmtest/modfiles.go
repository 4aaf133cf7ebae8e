package vmtest

import (
	"fmt"
	"strings"
)

// ModuleFiles returns the files of the named modules and of the modules
// they depend on according to modules.dep, as paths relative to
// k.ModulesDir (kernel/fs/ext4/ext4.ko.xz), every module after its
// dependencies. It is what a test copies into an OS tree that should carry
// only a few of the kernel's modules.
func (k *KernelTree) ModuleFiles(names ...string) ([]string, error) {
	deps, err := readModulesDep(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	var order []string
	done := make(map[string]bool)
	var visit func(name string) error
	visit = func(name string) error {
		if done[name] {
			return nil
		}
		m, ok := deps[name]
		if !ok {
			return fmt.Errorf("module %s not in %s/modules.dep", name, k.ModulesDir)
		}
		for i := len(m.deps) - 1; i >= 0; i-- {
			if err := visit(moduleName(m.deps[i])); err != nil {
				return err
			}
		}
		done[name] = true
		order = append(order, m.path)
		return nil
	}
	for _, n := range names {
		if err := visit(strings.ReplaceAll(n, "-", "_")); err != nil {
			return nil, err
		}
	}
	return order, nil
}
