package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte("repo = \"/srv/repo\"\n[gc]\nkeep-depth = 3\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Repo != "/srv/repo" || c.GC.KeepDepth != 3 || c.Source != p || c.Deploy.KeepRollback != 1 {
		t.Fatalf("got %+v", c)
	}
	os.WriteFile(p, []byte("[deploy]\nkeep-rollback = 3\nboot = \"/efi\"\n"), 0o644)
	if c, err = Load(p); err != nil || c.Deploy.KeepRollback != 3 || c.Deploy.Boot != "/efi" {
		t.Fatalf("deploy section: %+v, %v", c.Deploy, err)
	}
	os.WriteFile(p, []byte("[deploy]\nkeep-rollback = -1\n"), 0o644)
	if _, err = Load(p); err == nil {
		t.Fatalf("negative keep-rollback accepted")
	}
}

func TestLoadRejectsUnknownKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("repository = \"/x\"\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "repository") {
		t.Fatalf("got %v, want an unknown-key error naming it", err)
	}
}

func TestLoadMissingExplicitFileFails(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.toml")); err == nil {
		t.Fatal("missing explicit configuration accepted")
	}
}

func TestLoadDefaultsFromEnvAbsent(t *testing.T) {
	t.Setenv("CFS_DEPLOY_CONFIG", "")
	c, err := Load("")
	if err != nil && !strings.Contains(err.Error(), DefaultPath) {
		t.Fatal(err)
	}
	if err == nil && c.Repo == "" {
		t.Fatal("no default repo")
	}
}

func TestLoadRemotesAndDeploy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte(`
[remote.origin]
url = "https://updates.example.com/os"
verify-keys = ["/etc/cfs-deploy/keys/build.pub"]

[remote.registry]
url = "docker://registry.example.com/os:stable"
verify-keys = ["/etc/cfs-deploy/keys/build.pub", "ed25519:AAAA"]

[deploy]
require-signature = true
`), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Remotes["origin"].URL != "https://updates.example.com/os" || len(c.Remotes["registry"].VerifyKeys) != 2 {
		t.Fatalf("remotes %+v", c.Remotes)
	}
	if !c.Deploy.RequireSignature || len(c.RolloutKeys()) != 2 {
		t.Fatalf("deploy %+v, keys %v", c.Deploy, c.RolloutKeys())
	}

	for _, bad := range []struct{ text, want string }{
		{"[remote.x]\nverify-keys = []\n", "remote.x.url"},
		{"[remote.\"a b\"]\nurl = \"/x\"\n", "remote name"},
		{"[deploy]\nrequire-signature = true\n", "trusted keys"},
		{"[remote.x]\nurl = \"/x\"\nverify-key = \"k\"\n", "verify-key"},
	} {
		os.WriteFile(p, []byte(bad.text), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want one naming %q", bad.text, err, bad.want)
		}
	}
}

func TestLoadDeployModules(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	load := func(text string) (Config, error) {
		t.Helper()
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	c, err := load("[deploy]\nmodules = [\"ext4\", \"virtio_blk\", \"nvme\"]\n")
	if err != nil || strings.Join(c.Deploy.Modules, " ") != "ext4 virtio_blk nvme" {
		t.Fatalf("modules: %q, %v", c.Deploy.Modules, err)
	}
	// Unset and empty differ: the default set, or no modules at all.
	if c, err = load("[deploy]\nboot = \"/boot\"\n"); err != nil || c.Deploy.Modules != nil {
		t.Fatalf("unset: %#v, %v", c.Deploy.Modules, err)
	}
	if c, err = load("[deploy]\nmodules = []\n"); err != nil || c.Deploy.Modules == nil || len(c.Deploy.Modules) != 0 {
		t.Fatalf("empty: %#v, %v", c.Deploy.Modules, err)
	}
	for _, bad := range []string{`modules = ["ext4 xfs"]`, `modules = [""]`, `modules = ["a,b"]`, `modules = "ext4"`} {
		if _, err := load("[deploy]\n" + bad + "\n"); err == nil || !strings.Contains(err.Error(), "modules") {
			t.Errorf("%s: %v, want an error about deploy.modules", bad, err)
		}
	}
}
