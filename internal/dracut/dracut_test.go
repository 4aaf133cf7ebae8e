package dracut

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// fakeDracut writes a dracut stand-in that records its arguments and the
// environment the module reads, looks at the base directory it was given,
// and writes the output file (its last argument); with fail set it fails
// like dracut does, after some output.
func fakeDracut(t *testing.T, fail bool) (prog, record string) {
	t.Helper()
	dir := t.TempDir()
	record = filepath.Join(dir, "record")
	script := `#!/bin/bash
{
	printf 'arg=%s\n' "$@"
	echo "init=$` + InitEnv + `"
	echo "base=$dracutbasedir"
	[[ -n $dracutbasedir ]] && readlink "$dracutbasedir/modules.d/90cfs-deploy" | sed 's/^/module=/'
	[[ -n $dracutbasedir ]] && ls "$dracutbasedir/modules.d" | sed 's/^/has=/'
} >"` + record + `"
`
	if fail {
		script += "echo 'dracut[F]: something went wrong' >&2\nexit 1\n"
	} else {
		script += `out="${@: -1}"; echo image >"$out"` + "\n"
	}
	prog = filepath.Join(dir, "dracut")
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, record
}

// fixture makes a cfs-init stand-in, a module directory with modules.dep,
// a dracut base directory with one other module, and returns Options
// using them.
func fixture(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	init := filepath.Join(dir, "cfs-init")
	os.WriteFile(init, []byte("#!/bin/true\n"), 0o755)
	kmods := filepath.Join(dir, "lib/modules/6.12.0-test")
	os.MkdirAll(kmods, 0o755)
	os.WriteFile(filepath.Join(kmods, "modules.dep"), nil, 0o644)
	base := filepath.Join(dir, "dracut-base")
	os.MkdirAll(filepath.Join(base, "modules.d/99base"), 0o755)
	os.WriteFile(filepath.Join(base, "dracut-init.sh"), nil, 0o644)
	return Options{KernelVersion: "6.12.0-test", ModulesDir: kmods, Init: init, BaseDir: base}
}

func readRecord(t *testing.T, p string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	rec := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		rec[k] = append(rec[k], v)
	}
	return rec
}

func TestBuildArguments(t *testing.T) {
	opts := fixture(t)
	src, err := filepath.Abs("../../dracut/90cfs-deploy")
	if err != nil {
		t.Fatal(err)
	}
	opts.ModuleSource = src
	opts.HostOnly = true
	opts.Modules = []string{"base", "systemd"}
	opts.Drivers = []string{"virtio_blk", "ext4"}
	opts.Compression = "none"
	opts.IgnoreHostConfig = true
	var rec string
	opts.Dracut, rec = fakeDracut(t, false)
	out := filepath.Join(t.TempDir(), "initramfs.img")

	res, err := Build(context.Background(), out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != out || res.Size != int64(len("image\n")) {
		t.Errorf("result %+v", res)
	}
	r := readRecord(t, rec)
	args := strings.Join(r["arg"], "|")
	for _, want := range []string{
		"--kver|6.12.0-test|--kmoddir|" + opts.ModulesDir,
		"--hostonly|--no-hostonly-cmdline",
		"--modules|base systemd cfs-deploy",
		"--add-drivers|virtio_blk ext4",
		"--no-compress",
		"--conf|/dev/null|--confdir|",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("dracut arguments %q lack %q", args, want)
		}
	}
	if last := r["arg"][len(r["arg"])-1]; last != out {
		t.Errorf("last argument %q, want the output %s", last, out)
	}
	if got := r["init"]; len(got) != 1 || got[0] != opts.Init {
		t.Errorf("%s = %q, want %s", InitEnv, got, opts.Init)
	}
	// A private base directory: the given module as 90cfs-deploy, the
	// installed ones beside it; removed afterwards.
	if got := r["module"]; len(got) != 1 || got[0] != src {
		t.Errorf("modules.d/90cfs-deploy -> %q, want %s", got, src)
	}
	if has := strings.Join(r["has"], " "); has != "90cfs-deploy 99base" {
		t.Errorf("private modules.d holds %q", has)
	}
	if _, err := os.Stat(r["base"][0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private base directory %s left behind: %v", r["base"][0], err)
	}
}

func TestBuildDefaultModuleSet(t *testing.T) {
	opts := fixture(t)
	// The module installed in dracut's base directory.
	os.MkdirAll(filepath.Join(opts.BaseDir, "modules.d/90cfs-deploy"), 0o755)
	os.WriteFile(filepath.Join(opts.BaseDir, "modules.d/90cfs-deploy/module-setup.sh"), nil, 0o644)
	var rec string
	opts.Dracut, rec = fakeDracut(t, false)
	if _, err := Build(context.Background(), filepath.Join(t.TempDir(), "out.img"), opts); err != nil {
		t.Fatal(err)
	}
	r := readRecord(t, rec)
	args := strings.Join(r["arg"], "|")
	if !strings.Contains(args, "--no-hostonly|--add|cfs-deploy") || strings.Contains(args, "--modules") || strings.Contains(args, "--conf") {
		t.Errorf("dracut arguments %q: want --no-hostonly --add cfs-deploy, no --modules, the host's configuration", args)
	}
	if r["base"][0] != "" {
		t.Errorf("dracutbasedir=%q: the installed module needs no private base directory", r["base"][0])
	}
}

func TestBuildErrors(t *testing.T) {
	prog, _ := fakeDracut(t, false)
	cases := []struct {
		name   string
		edit   func(*Options)
		sentry error
		want   string
	}{
		{"no dracut", func(o *Options) { o.Dracut = "/nonexistent/dracut" }, ErrNoDracut, "dracut-core"},
		{"no cfs-init", func(o *Options) { o.Init = "/nonexistent/cfs-init" }, ErrNoInit, "/nonexistent/cfs-init"},
		{"cfs-init not given", func(o *Options) { o.Init = "" }, ErrNoInit, "no cfs-init"},
		{"cfs-init not executable", func(o *Options) { os.Chmod(o.Init, 0o644) }, ErrNoInit, "not an executable"},
		{"module not installed", func(o *Options) {}, ErrNoModule, "modules.d"},
		{"not a module", func(o *Options) { o.ModuleSource = o.BaseDir }, ErrNoModule, "not a dracut module"},
		{"no modules.dep", func(o *Options) { os.Remove(filepath.Join(o.ModulesDir, "modules.dep")) }, nil, "run depmod"},
		{"bad kernel version", func(o *Options) { o.KernelVersion = "../x" }, nil, "kernel version"},
		{"bad compression", func(o *Options) {
			os.MkdirAll(filepath.Join(o.BaseDir, "modules.d/90cfs-deploy"), 0o755)
			os.WriteFile(filepath.Join(o.BaseDir, "modules.d/90cfs-deploy/module-setup.sh"), nil, 0o644)
			o.Compression = "lz4"
		}, nil, `compression "lz4"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := fixture(t)
			opts.Dracut = prog
			c.edit(&opts)
			out := filepath.Join(t.TempDir(), "out.img")
			_, err := Build(context.Background(), out, opts)
			if err == nil || !strings.Contains(err.Error(), c.want) || (c.sentry != nil && !errors.Is(err, c.sentry)) {
				t.Fatalf("err = %v; want one saying %q (%v)", err, c.want, c.sentry)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("an output file exists after the error: %v", err)
			}
		})
	}

	t.Run("dracut fails", func(t *testing.T) {
		opts := fixture(t)
		opts.ModuleSource = "../../dracut/90cfs-deploy"
		opts.Dracut, _ = fakeDracut(t, true)
		_, err := Build(context.Background(), filepath.Join(t.TempDir(), "out.img"), opts)
		if err == nil || !strings.Contains(err.Error(), "something went wrong") {
			t.Fatalf("err = %v; want dracut's output in it", err)
		}
	})
}

func TestExtractModules(t *testing.T) {
	const kver = "6.12.0-test"
	mods := "usr/lib/modules/" + kver + "/"
	fsys := fstest.MapFS{
		mods + "kernel/fs/erofs/erofs.ko.xz": {Data: []byte("erofs"), Mode: 0o644},
		mods + "modules.dep":                 {Data: []byte("kernel/fs/erofs/erofs.ko.xz:\n"), Mode: 0o644},
		mods + "vmlinuz":                     {Data: []byte("kernel"), Mode: 0o644},
		mods + "build":                       {Data: []byte("/usr/src/linux-headers"), Mode: os.ModeSymlink | 0o777},
		"lib":                                {Data: []byte("usr/lib"), Mode: os.ModeSymlink | 0o777},
	}
	dir := filepath.Join(t.TempDir(), "extract")
	got, err := ExtractModules(fsys, kver, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "lib/modules", kver); got != want {
		t.Fatalf("module directory %s, want %s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(got, "kernel/fs/erofs/erofs.ko.xz")); err != nil || string(b) != "erofs" {
		t.Errorf("erofs.ko.xz: %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(got, "build")); err != nil || l != "/usr/src/linux-headers" {
		t.Errorf("build link: %q, %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(got, "vmlinuz")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the kernel image was copied: %v", err)
	}
	if _, err := ExtractModules(fsys, "6.1.0-other", t.TempDir()); err == nil || !strings.Contains(err.Error(), "6.1.0-other") {
		t.Errorf("a kernel the tree lacks: %v", err)
	}
	if _, err := ExtractModules(fsys, kver, dir); err == nil {
		t.Error("extracting over an earlier extraction succeeded")
	}
}

func TestExtractModulesRunsDepmod(t *testing.T) {
	if _, err := exec.LookPath("depmod"); err != nil {
		t.Skip("depmod not installed (kmod)")
	}
	const kver = "6.12.0-test"
	fsys := fstest.MapFS{
		"lib/modules/" + kver + "/modules.builtin": {Data: []byte("kernel/fs/ext4/ext4.ko\n"), Mode: 0o644},
		"lib/modules/" + kver + "/modules.order":   {Data: nil, Mode: 0o644},
	}
	got, err := ExtractModules(fsys, kver, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(got, "modules.dep")); err != nil {
		t.Errorf("depmod did not run: %v", err)
	}
}

// TestModuleSetup runs the dracut module's install() and installkernel()
// with dracut's helpers replaced by recorders: what it installs, and that
// a missing cfs-init stops the build (dracut ignores install()'s status,
// so the module must exit).
func TestModuleSetup(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	src, err := filepath.Abs("../../dracut/90cfs-deploy")
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, init, fn string) (initdir, log string, err error) {
		initdir = t.TempDir()
		logf := filepath.Join(t.TempDir(), "log")
		script := `
set -u
initdir=` + initdir + `
systemdsystemunitdir=/usr/lib/systemd/system
moddir=` + src + `
hostonly=yes
dfatal() { echo "dfatal: $*" >>` + logf + `; }
inst_simple() { echo "inst_simple $1 $2" >>` + logf + `; [[ -f $1 ]]; }
inst_hook() { echo "inst_hook $1 $2 $3" >>` + logf + `; }
instmods() { echo "instmods hostonly=[$hostonly] $*" >>` + logf + `; }
. "$moddir/module-setup.sh"
` + fn + `
echo "status $?" >>` + logf + `
`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), InitEnv+"="+init)
		out, err := cmd.CombinedOutput()
		b, _ := os.ReadFile(logf)
		if len(out) > 0 {
			t.Logf("output: %s", out)
		}
		return initdir, string(b), err
	}

	t.Run("install", func(t *testing.T) {
		init := filepath.Join(t.TempDir(), "cfs-init")
		os.WriteFile(init, nil, 0o755)
		initdir, log, err := run(t, init, "install")
		if err != nil {
			t.Fatalf("install: %v\n%s", err, log)
		}
		for _, want := range []string{
			"inst_simple " + init + " /usr/lib/cfs-deploy/cfs-init",
			"inst_simple " + src + "/cfs-setup-root.service /usr/lib/systemd/system/cfs-setup-root.service",
			"inst_hook cmdline 90 " + src + "/cfs-deploy-cmdline.sh",
			"status 0",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("install() did not %q:\n%s", want, log)
			}
		}
		link := filepath.Join(initdir, "usr/lib/systemd/system/initrd-root-fs.target.requires/cfs-setup-root.service")
		if l, err := os.Readlink(link); err != nil || l != "../cfs-setup-root.service" {
			t.Errorf("requires link: %q, %v", l, err)
		}
		if b, err := os.ReadFile(filepath.Join(initdir, "etc/cmdline.d/90cfs-deploy.conf")); err != nil || !strings.Contains(string(b), "rd.shell=0 rd.emergency=reboot") {
			t.Errorf("cmdline.d: %q, %v", b, err)
		}
	})

	t.Run("install without cfs-init", func(t *testing.T) {
		_, log, err := run(t, "/nonexistent/cfs-init", "install")
		if err == nil || strings.Contains(log, "status") {
			t.Fatalf("install() returned instead of exiting: %v\n%s", err, log)
		}
		if !strings.Contains(log, "dfatal: cfs-deploy: cfs-init not found (/nonexistent/cfs-init)") {
			t.Errorf("no clear message:\n%s", log)
		}
	})

	t.Run("installkernel", func(t *testing.T) {
		_, log, err := run(t, "", "installkernel")
		if err != nil {
			t.Fatal(err)
		}
		// In hostonly mode too, the composefs modules must go in.
		if !strings.Contains(log, "instmods hostonly=[] -c erofs overlay loop") || !strings.Contains(log, "status 0") {
			t.Errorf("installkernel():\n%s", log)
		}
	})
}
