package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// This file holds the offline edits an attacker (or a test) with the disk
// image makes, and the reads a boot loader makes, all through debugfs(8):
// the host mounts nothing, so the guest's file system state is exactly what
// the guest left.

// Ext4DirEntry is one entry of a directory in an ext2/3/4 image.
type Ext4DirEntry struct {
	Name string
	Mode uint32 // type and permission bits, as in stat(2)
	Size int64
}

// ListExt4Dir lists the directory dir (absolute, in the file system) of
// img, without "." and "..".
func ListExt4Dir(img, dir string) ([]Ext4DirEntry, error) {
	out, err := Debugfs(img, "ls -p "+dir)
	if err != nil {
		return nil, err
	}
	var ents []Ext4DirEntry
	// "/inode/mode/uid/gid/name/size/" per entry; the mode is octal.
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(l), "/")
		if len(f) != 8 || f[5] == "." || f[5] == ".." {
			continue
		}
		var e Ext4DirEntry
		e.Name = f[5]
		if _, err := fmt.Sscanf(f[2], "%o", &e.Mode); err != nil {
			return nil, fmt.Errorf("debugfs ls -p %s: mode %q of %s", dir, f[2], e.Name)
		}
		if f[6] != "" {
			if _, err := fmt.Sscanf(f[6], "%d", &e.Size); err != nil {
				return nil, fmt.Errorf("debugfs ls -p %s: size %q of %s", dir, f[6], e.Name)
			}
		}
		ents = append(ents, e)
	}
	return ents, nil
}

// DumpFileFromExt4 copies the file p (absolute, in the file system) of img
// to the host file dst, keeping its permission bits.
func DumpFileFromExt4(img, p, dst string) error {
	if _, err := Debugfs(img, fmt.Sprintf("dump -p %s %s", p, dst)); err != nil {
		return err
	}
	// debugfs says nothing when p is not a regular file.
	if _, err := os.Stat(dst); err != nil {
		return fmt.Errorf("debugfs dump %s from %s: %w", p, img, err)
	}
	return nil
}

// ReplaceFileInExt4 replaces the file p of img by a new file (a new inode:
// no fs-verity, owner and mode of src) holding the content of the host
// file src.
func ReplaceFileInExt4(img, p, src string) error {
	dir, name := path.Split(p)
	return debugfsScript(img, "cd "+dir, "rm "+name, "write "+src+" "+name)
}

// RemoveFromExt4 removes the file (or symbolic link) p of img.
func RemoveFromExt4(img, p string) error {
	return debugfsScript(img, "rm "+p)
}

// debugfsScript runs requests read-write on img, in order. A request that
// fails stops nothing in debugfs, so any complaint is an error.
func debugfsScript(img string, requests ...string) error {
	for _, r := range requests {
		if strings.ContainsAny(r, "\n\"") {
			return fmt.Errorf("debugfs request %q: newlines and quotes are not supported", r)
		}
	}
	script, err := os.CreateTemp("", "debugfs-*.cmd")
	if err != nil {
		return err
	}
	defer os.Remove(script.Name())
	script.WriteString(strings.Join(requests, "\n") + "\n")
	if err := script.Close(); err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("debugfs", "-w", "-f", script.Name(), img)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var complaints []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			complaints = append(complaints, l)
		}
	}
	if err != nil || len(complaints) > 0 {
		return fmt.Errorf("debugfs -w %q on %s: %v %s", requests, img, err, strings.Join(complaints, "; "))
	}
	return nil
}

// CopySparse copies the disk image src to dst keeping holes, so that a
// mostly empty image costs little to copy per test.
func CopySparse(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp --sparse=always %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}
