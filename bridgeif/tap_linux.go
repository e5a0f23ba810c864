package bridgeif

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TAP is a Linux TAP device opened through /dev/net/tun, one frame per read
// and write (IFF_TAP|IFF_NO_PI).
type TAP struct {
	name    string
	created bool
	f       *os.File
	rc      syscall.RawConn
	ctl     int // a socket in the TAP's network namespace, for interface ioctls
}

var _ Port = (*TAP)(nil)

// OpenTAP opens the TAP device name, creating it when it does not exist and
// attaching to it when it does (a persistent TAP, such as one made by
// `ip tuntap add` or given to Open vSwitch, is never recreated). It brings
// the link up. A TAP that OpenTAP created disappears on Close.
func OpenTAP(name string) (*TAP, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open tap %q: a device name has 1 to %d characters", name, unix.IFNAMSIZ-1)
	}
	_, existed := net.InterfaceByName(name)
	created := existed != nil
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, tapError(name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, tapError(name, err)
	}
	// Non-blocking before Go's poller sees the fd, so that Close unblocks
	// a blocked read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	t := &TAP{name: ifr.Name(), created: created, f: f, rc: rc, ctl: ctl}
	if err := t.setUp(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// tapError turns the errors of opening a TAP into one line that names the fix.
func tapError(name string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("open tap %q: /dev/net/tun missing: load the tun module (modprobe tun), or in a container pass the device (--device /dev/net/tun)", name)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("open tap %q: operation not permitted: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep $(command -v cab))", name)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("open tap %q: device busy: another process has it open", name)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("open tap %q: invalid: a device of that name exists and is not a TAP", name)
	}
	return fmt.Errorf("open tap %q: %w", name, err)
}

// ioctl runs an interface ioctl for the TAP, in the TAP's namespace.
func (t *TAP) ioctl(req uint, ifr *unix.Ifreq) error {
	return unix.IoctlIfreq(t.ctl, req, ifr)
}

func (t *TAP) setUp() error {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ioctl(unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %q: get flags: %w", t.name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := t.ioctl(unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %q: bring up: %w", t.name, err)
	}
	return nil
}

// Name returns the device name.
func (t *TAP) Name() string { return t.name }

// Created reports whether OpenTAP created the device (and Close removes it).
func (t *TAP) Created() bool { return t.created }

// SetHardwareAddr sets the device's MAC address.
func (t *TAP) SetHardwareAddr(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("tap %q: MAC %v is not 6 bytes", t.name, mac)
	}
	ifr, _ := unix.NewIfreq(t.name)
	raw := (*[unix.IFNAMSIZ + 24]byte)(unsafe.Pointer(ifr))
	raw[unix.IFNAMSIZ] = unix.ARPHRD_ETHER // sa_family, little endian
	raw[unix.IFNAMSIZ+1] = 0
	copy(raw[unix.IFNAMSIZ+2:], mac)
	if err := t.ioctl(unix.SIOCSIFHWADDR, ifr); err != nil {
		return fmt.Errorf("tap %q: set MAC %v: %w", t.name, mac, err)
	}
	return nil
}

// MTU returns the device's MTU.
func (t *TAP) MTU() (int, error) {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ioctl(unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("tap %q: get mtu: %w", t.name, err)
	}
	return int(ifr.Uint32()), nil
}

// SetMTU sets the device's MTU.
func (t *TAP) SetMTU(mtu int) error {
	ifr, _ := unix.NewIfreq(t.name)
	ifr.SetUint32(uint32(mtu))
	if err := t.ioctl(unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("tap %q: set mtu %d: %w", t.name, mtu, err)
	}
	return nil
}

// HardwareAddr returns the device's MAC address.
func (t *TAP) HardwareAddr() (net.HardwareAddr, error) {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ioctl(unix.SIOCGIFHWADDR, ifr); err != nil {
		return nil, fmt.Errorf("tap %q: get MAC: %w", t.name, err)
	}
	raw := (*[unix.IFNAMSIZ + 24]byte)(unsafe.Pointer(ifr))
	// struct ifreq: name, then struct sockaddr: family (2), data (14).
	return net.HardwareAddr(append([]byte(nil), raw[unix.IFNAMSIZ+2:unix.IFNAMSIZ+8]...)), nil
}

func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

// ReadBatch implements Port: one blocking read, then the frames already
// queued, without blocking.
func (t *TAP) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n == 0 {
		m, err := t.f.Read(bufs[0][offset:])
		if err != nil {
			return 0, fmt.Errorf("tap %q: read: %w", t.name, closedErr(err))
		}
		if m >= 14 {
			sizes[0] = m
			n = 1
		}
	}
	for n < len(bufs) {
		var m int
		var rerr error
		buf := bufs[n][offset:]
		err := t.rc.Read(func(fd uintptr) bool {
			m, rerr = unix.Read(int(fd), buf)
			return true // never wait: take only what is queued
		})
		if err != nil || rerr != nil || m <= 0 {
			break
		}
		if m < 14 {
			continue
		}
		sizes[n] = m
		n++
	}
	return n, nil
}

// WriteBatch implements Port.
func (t *TAP) WriteBatch(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if _, err := t.f.Write(b[offset:]); err != nil {
			err = closedErr(err)
			if errors.Is(err, net.ErrClosed) {
				return i, fmt.Errorf("tap %q: write: %w", t.name, err)
			}
			// A frame the kernel refuses (too long, say) is dropped.
		}
	}
	return len(bufs), nil
}

// Close implements Port.
func (t *TAP) Close() error {
	err := t.f.Close()
	if err == nil {
		unix.Close(t.ctl)
	}
	return err
}
