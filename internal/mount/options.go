package mount

import (
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// ParseOptions parses the option string of `mount -t composefs` /
// mount.composefs (everything after -o) into Options; Image is left empty.
//
// Options are separated by commas; a backslash makes the next character
// literal, so `upperdir=/a\,b` names "/a,b". basedir lists directories
// separated by ':' (which cannot be escaped, as upstream). Of verity,
// noverity and tryverity the last one wins; digest= implies verity unless
// one of them is given. Without ro or rw the mount is read-only unless an
// upper directory makes it writable.
//
// mount(8) also hands helpers the generic options from the command line
// or fstab. nosuid, nodev and noexec are honoured; options that only
// matter to mount(8) itself, or that repeat the defaults, are accepted and
// ignored. With sloppy (mount -s) unknown options are ignored too;
// otherwise they are an error naming the option.
func ParseOptions(s string, sloppy bool) (Options, error) {
	var (
		opts      Options
		verityOpt string
		readMode  string
		haveBase  bool
	)
	items, err := splitOptions(s)
	if err != nil {
		return opts, err
	}
	for _, it := range items {
		key, value, hasValue := strings.Cut(it, "=")
		needValue := func() error {
			if !hasValue || value == "" {
				return fmt.Errorf("option %q needs a value", key)
			}
			return nil
		}
		switch key {
		case "basedir":
			if err := needValue(); err != nil {
				return opts, err
			}
			opts.ObjectDirs = nil
			for _, d := range strings.Split(value, ":") {
				if d == "" {
					return opts, fmt.Errorf("option basedir=%s: empty directory in the list", value)
				}
				opts.ObjectDirs = append(opts.ObjectDirs, d)
			}
			haveBase = true
		case "digest":
			if err := needValue(); err != nil {
				return opts, err
			}
			d, err := verity.ParseDigest(value)
			if err != nil {
				return opts, fmt.Errorf("option digest: %w", err)
			}
			opts.ExpectDigest = &d
		case "upperdir", "workdir", "idmap":
			if err := needValue(); err != nil {
				return opts, err
			}
			switch key {
			case "upperdir":
				opts.UpperDir = value
			case "workdir":
				opts.WorkDir = value
			case "idmap":
				opts.IdmapUserns = value
			}
		case "verity", "noverity", "tryverity":
			if hasValue {
				return opts, fmt.Errorf("option %q takes no value", key)
			}
			verityOpt = key
		case "ro", "rw":
			if hasValue {
				return opts, fmt.Errorf("option %q takes no value", key)
			}
			readMode = key
		default:
			known, err := genericOption(&opts, key, hasValue)
			if err != nil {
				return opts, err
			}
			if !known && !sloppy {
				return opts, fmt.Errorf("unknown option %q", it)
			}
		}
	}
	if !haveBase {
		return opts, fmt.Errorf("option basedir= is required")
	}
	switch verityOpt {
	case "verity":
		opts.RequireVerity = true
	case "tryverity":
		opts.TryVerity = true
	case "":
		opts.RequireVerity = opts.ExpectDigest != nil
	}
	switch readMode {
	case "rw":
		opts.ReadWrite = true
	case "":
		opts.ReadWrite = opts.UpperDir != ""
	}
	return opts, nil
}

// genericOption handles the options mount(8) passes on to every helper.
// It reports whether key is one of them.
func genericOption(opts *Options, key string, hasValue bool) (bool, error) {
	flag := func(set *bool, v bool) (bool, error) {
		if hasValue {
			return true, fmt.Errorf("option %q takes no value", key)
		}
		*set = v
		return true, nil
	}
	switch key {
	case "nosuid":
		return flag(&opts.NoSuid, true)
	case "suid":
		return flag(&opts.NoSuid, false)
	case "nodev":
		return flag(&opts.NoDev, true)
	case "dev":
		return flag(&opts.NoDev, false)
	case "noexec":
		return flag(&opts.NoExec, true)
	case "exec":
		return flag(&opts.NoExec, false)
	case "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser",
		"users", "owner", "group", "relatime", "async", "silent", "loud", "comment":
		// Meaningful to mount(8) or fstab only, or the kernel default.
		return true, nil
	}
	if strings.HasPrefix(key, "x-") {
		return true, nil // userspace annotations (x-systemd.* ...)
	}
	return false, nil
}

// splitOptions splits s on commas not preceded by a backslash and removes
// the escaping backslashes. Empty items are dropped.
func splitOptions(s string) ([]string, error) {
	var (
		items []string
		cur   strings.Builder
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("option string %q ends in a lone backslash", s)
			}
			i++
			cur.WriteByte(s[i])
		case ',':
			if cur.Len() > 0 {
				items = append(items, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		items = append(items, cur.String())
	}
	return items, nil
}
