// Command standin-init stands in for cfs-init in the initramfs builder's
// tests until that exists: a static Go program linking what cfs-init links
// for module loading, so that image sizes are realistic. It is never run.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

func main() {
	list, err := load.ReadLoadList("/usr/lib/modules/" + os.Args[1] + "/" + load.ListFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := load.LoadAll("/usr/lib/modules/"+os.Args[1], list, func(f string, a ...any) { fmt.Printf(f+"\n", a...) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	unix.Sync()
}
