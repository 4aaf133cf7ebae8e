package mount

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// fsContext is a filesystem context of the new mount API (fsopen). Every
// failure is returned as a *MountError carrying the context's log, which is
// where the kernel explains an EINVAL.
type fsContext struct {
	fd   int
	step string
}

func openFSContext(fstype, step string) (*fsContext, error) {
	fd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, &MountError{Step: step, Op: "fsopen " + fstype, Err: err}
	}
	return &fsContext{fd: fd, step: step}, nil
}

func (c *fsContext) fail(op string, err error) error {
	e := &MountError{Step: c.step, Op: op, Err: err, Log: c.drainLog()}
	// Many filesystems (EROFS among them) explain an EINVAL only in the
	// kernel log; point there rather than leave a bare errno.
	e.InDmesg = len(e.Log) == 0 && errors.Is(err, unix.EINVAL)
	return e
}

func (c *fsContext) setString(key, value string) error {
	if err := unix.FsconfigSetString(c.fd, key, value); err != nil {
		return c.fail("fsconfig "+key+"="+value, err)
	}
	return nil
}

func (c *fsContext) setFlag(key string) error {
	if err := unix.FsconfigSetFlag(c.fd, key); err != nil {
		return c.fail("fsconfig "+key, err)
	}
	return nil
}

func (c *fsContext) create() error {
	if err := unix.FsconfigCreate(c.fd); err != nil {
		return c.fail("fsconfig create", err)
	}
	return nil
}

// mount creates the detached mount of the superblock and returns its fd.
func (c *fsContext) mount(attrs int) (int, error) {
	fd, err := unix.Fsmount(c.fd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, c.fail("fsmount", err)
	}
	return fd, nil
}

// drainLog reads the messages queued on the context. Each read returns one
// message such as "e overlay: ..."; ENODATA means none are left.
func (c *fsContext) drainLog() []string {
	var msgs []string
	buf := make([]byte, 4096)
	for len(msgs) < 32 { // the kernel keeps at most 8; guard against loops anyway
		n, err := unix.Read(c.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimRight(string(buf[:n]), "\n"))
	}
	return msgs
}

func (c *fsContext) close() { unix.Close(c.fd) }
