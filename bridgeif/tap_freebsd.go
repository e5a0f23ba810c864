package bridgeif

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Verified: compiled for freebsd/amd64 and freebsd/arm64 by make cross;
// not run (no FreeBSD machine or guest image was at hand). songgao/water
// has no FreeBSD support, so cab opens /dev/tapN itself: if_tap(4) passes
// one Ethernet frame per read(2) and write(2), which rwPort expects.

// openTAPDevice opens the TAP tapN through /dev/tapN, which creates it
// when it does not exist (devfs cloning, on by default), and brings it up.
func openTAPDevice(name string) (io.ReadWriteCloser, string, error) {
	if !strings.HasPrefix(name, "tap") || strings.Trim(name[3:], "0123456789") != "" || len(name) == 3 {
		return nil, "", fmt.Errorf("open tap %q: on FreeBSD a TAP is named tapN, e.g. tap:tap0", name)
	}
	f, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("open tap %q: /dev/%s missing: load the driver (kldload if_tap on FreeBSD 12 and older) and check sysctl net.link.tap.devfs_cloning=1", name, name)
	case errors.Is(err, os.ErrPermission):
		return nil, "", fmt.Errorf("open tap %q: %w: run as root, or give cab's user the device with a devfs rule (add path 'tap*' mode 0660 group network) and sysctl net.link.tap.user_open=1", name, err)
	case errors.Is(err, unix.EBUSY):
		return nil, "", fmt.Errorf("open tap %q: %w: another process has the device open; stop it or pick another tapN", name, err)
	case err != nil:
		return nil, "", fmt.Errorf("open tap %q: %w", name, err)
	}
	if err := ifUp(name); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("open tap %q: bring the link up: %w: run as root, or bring it up beforehand (ifconfig %s up)", name, err, name)
	}
	return f, name, nil
}

// ifreqFlags is FreeBSD's struct ifreq as SIOCGIFFLAGS and SIOCSIFFLAGS
// use it: the name, then ifr_flags and ifr_flagshigh.
type ifreqFlags struct {
	name      [unix.IFNAMSIZ]byte
	flags     uint16
	flagsHigh uint16
	_         [12]byte
}

// ifUp sets IFF_UP on the interface name.
func ifUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var ifr ifreqFlags
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), uintptr(unix.SIOCGIFFLAGS), uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	if ifr.flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.flags |= unix.IFF_UP
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), uintptr(unix.SIOCSIFFLAGS), uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}
