// Package config reads cfs-deploy's TOML configuration file.
//
// The file is looked up at --config, else $CFS_DEPLOY_CONFIG, else
// /etc/cfs-deploy/config.toml; a missing default file means defaults.
// Unknown keys are errors, so a typo does not silently do nothing.
package config

import (
	"errors"
	"fmt"
	"os"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the configuration lives unless told otherwise.
const DefaultPath = "/etc/cfs-deploy/config.toml"

// Config is the whole file.
type Config struct {
	// Repo is the repository directory (default /sysroot/composefs).
	Repo   string `toml:"repo"`
	GC     GC     `toml:"gc"`
	Deploy Deploy `toml:"deploy"`
	// Source records where the configuration came from, for messages.
	Source string `toml:"-"`
}

// GC configures garbage collection.
type GC struct {
	// KeepDepth keeps this many commits of each branch (0: all).
	KeepDepth int `toml:"keep-depth"`
}

// Deploy configures rollout and the other deployment verbs.
type Deploy struct {
	// KeepRollback is how many deployments after the default retention
	// keeps (besides the booted and pinned ones) after a rollout.
	KeepRollback int `toml:"keep-rollback"`
	// Boot is the boot directory (/boot, an ESP); empty: what rollout
	// recorded in the sysroot, else <sysroot>/boot.
	Boot string `toml:"boot"`
	// BootTries counts the boot tries of new entries (0: not counted).
	BootTries int `toml:"boot-tries"`
	// Initramfs is the builder of initramfs images for commits that
	// ship none: "cfs-init" (default), "dracut" or "dracut-generic".
	Initramfs string `toml:"initramfs"`
}

// Defaults are used for anything the file does not set.
func Defaults() Config {
	return Config{Repo: "/sysroot/composefs", Deploy: Deploy{KeepRollback: 1}}
}

// Load reads the configuration from path, or from the environment or the
// default location when path is empty.
func Load(path string) (Config, error) {
	c := Defaults()
	explicit := path != ""
	if !explicit {
		path = os.Getenv("CFS_DEPLOY_CONFIG")
		explicit = path != ""
	}
	if !explicit {
		path = DefaultPath
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		c.Source = "defaults"
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read configuration: %w", err)
	}
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return c, fmt.Errorf("configuration %s: %w", path, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return c, fmt.Errorf("configuration %s: unknown key %q", path, undec[0].String())
	}
	if c.GC.KeepDepth < 0 {
		return c, fmt.Errorf("configuration %s: gc.keep-depth must be >= 0", path)
	}
	if c.Deploy.KeepRollback < 0 {
		return c, fmt.Errorf("configuration %s: deploy.keep-rollback must be >= 0", path)
	}
	switch c.Deploy.Initramfs {
	case "", "cfs-init", "dracut", "dracut-generic":
	default:
		return c, fmt.Errorf("configuration %s: deploy.initramfs %q: want cfs-init, dracut or dracut-generic", path, c.Deploy.Initramfs)
	}
	if c.Deploy.BootTries < 0 || c.Deploy.BootTries > 1000 {
		return c, fmt.Errorf("configuration %s: deploy.boot-tries must be between 0 and 1000", path)
	}
	c.Source = path
	return c, nil
}
