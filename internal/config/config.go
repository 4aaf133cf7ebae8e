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
	"strings"

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
	// Remotes are named places to pull from ([remote.NAME]).
	Remotes map[string]Remote `toml:"remote"`
	// Source records where the configuration came from, for messages.
	Source string `toml:"-"`
}

// Remote is one [remote.NAME] section.
type Remote struct {
	// URL is a published repository (http://, https://, file://, a
	// path) or a container image (docker://, oci:, oci-archive:).
	URL string `toml:"url"`
	// VerifyKeys, if set, are the keys one of which must have signed a
	// commit pulled from this remote: paths of PEM public key files, or
	// "ed25519:BASE64".
	VerifyKeys []string `toml:"verify-keys"`
}

// RolloutKeys are the keys rollout checks signatures against when
// require-signature is set: [deploy] verify-keys, else the verify-keys of
// all remotes together.
func (c Config) RolloutKeys() []string {
	if len(c.Deploy.VerifyKeys) > 0 {
		return c.Deploy.VerifyKeys
	}
	var keys []string
	seen := map[string]bool{}
	for _, r := range c.Remotes {
		for _, k := range r.VerifyKeys {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys
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
	// Modules, if set, replaces the default kernel module set of an
	// initramfs built with cfs-init (what --modules does): module names,
	// each added with everything it needs. Unset: the modules for the
	// sysroot's file system and disk. An empty list builds an image
	// without modules.
	Modules []string `toml:"modules"`
	// RequireSignature makes rollout refuse commits not signed by a
	// trusted key (VerifyKeys, else every remote's verify-keys).
	RequireSignature bool     `toml:"require-signature"`
	VerifyKeys       []string `toml:"verify-keys"`
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
	for _, m := range c.Deploy.Modules {
		if err := CheckModuleName(m); err != nil {
			return c, fmt.Errorf("configuration %s: deploy.modules: %w", path, err)
		}
	}
	if c.Deploy.BootTries < 0 || c.Deploy.BootTries > 1000 {
		return c, fmt.Errorf("configuration %s: deploy.boot-tries must be between 0 and 1000", path)
	}
	for name, r := range c.Remotes {
		if !validRemoteName(name) {
			return c, fmt.Errorf("configuration %s: remote name %q: use letters, digits, '.', '_' and '-'", path, name)
		}
		if r.URL == "" {
			return c, fmt.Errorf("configuration %s: remote.%s.url is not set", path, name)
		}
	}
	if c.Deploy.RequireSignature && len(c.RolloutKeys()) == 0 {
		return c, fmt.Errorf("configuration %s: deploy.require-signature needs trusted keys (deploy.verify-keys, or verify-keys of a remote)", path)
	}
	c.Source = path
	return c, nil
}

// CheckModuleName refuses what cannot be a kernel module name, so that a
// typo such as "ext4 xfs" in one string is caught before a build.
func CheckModuleName(name string) error {
	if name == "" {
		return errors.New("empty module name")
	}
	if strings.ContainsAny(name, " \t\n,/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("%q is not a module name", name)
	}
	return nil
}

func validRemoteName(name string) bool {
	if name == "" || name[0] == '.' || name[0] == '-' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
