package mount

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// loopDevice is a configured loop device backed by the image. The device
// has LO_FLAGS_AUTOCLEAR, so it goes away once the EROFS mount on it is gone
// and this descriptor is closed; there is nothing to tear down explicitly.
type loopDevice struct {
	f    *os.File
	path string
}

// loopRetries bounds the race with other processes that take the device
// LOOP_CTL_GET_FREE just offered us.
const loopRetries = 16

func attachLoop(img *image) (*loopDevice, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, &MountError{Step: StepLoop, Op: "open /dev/loop-control", Err: err}
	}
	defer ctl.Close()
	var lastErr error
	for range loopRetries {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, &MountError{Step: StepLoop, Op: "ioctl LOOP_CTL_GET_FREE", Err: err}
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, &MountError{Step: StepLoop, Op: "open " + path, Err: err}
		}
		err = configureLoop(dev, img)
		if err == nil {
			return &loopDevice{f: dev, path: path}, nil
		}
		dev.Close()
		lastErr = err
		if !errors.Is(err, unix.EBUSY) {
			break
		}
	}
	return nil, lastErr
}

func configureLoop(dev *os.File, img *image) error {
	cfg := unix.LoopConfig{
		Fd:   uint32(img.f.Fd()),
		Size: 4096, // the EROFS block size; smaller would only add overhead
	}
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img.f.Name()) // for losetup -l
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if errors.Is(err, unix.EINVAL) {
		// Newer kernels refuse direct I/O when the backing filesystem
		// cannot do it (tmpfs, for one) instead of quietly dropping it.
		cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	}
	if err != nil {
		return &MountError{Step: StepLoop, Op: "ioctl LOOP_CONFIGURE " + dev.Name(), Err: err}
	}
	return nil
}

func (l *loopDevice) close() { l.f.Close() }
