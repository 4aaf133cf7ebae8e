package osprep

import (
	_ "embed"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

//go:embed generator.sh
var generatorTemplate string

// GeneratorScript is the systemd generator Prepare installs at
// GeneratorPath: it copies the units cfs-init writes to sysroot.UnitsDir
// into the generator output directory.
func GeneratorScript() string {
	return strings.ReplaceAll(generatorTemplate, "@UNITS_DIR@", sysroot.UnitsDir)
}

func (p *prep) generator() error {
	return p.writeFile(GeneratorPath, 0o755, []byte(GeneratorScript()))
}
