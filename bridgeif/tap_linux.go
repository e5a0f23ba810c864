package bridgeif

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Verified: run on Linux by tap_linux_test.go, as root, over real TAP
// devices in network namespaces of the tests' own.

// tapFlags asks /dev/net/tun for a TAP device that reads and writes bare
// frames (no packet information prefix), one queue.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI

// TAP is a Linux TAP device opened through /dev/net/tun (IFF_TAP|IFF_NO_PI),
// one frame per read and write. Its interface settings (MTU, MAC, flags) are
// changed in the network namespace that OpenTAP ran in.
type TAP struct {
	name    string
	created bool
	f       *os.File        // the /dev/net/tun queue, managed by Go's poller
	rc      syscall.RawConn // f's raw descriptor
	ctl     *os.File        // a socket in the TAP's network namespace, for interface ioctls
	ctlRC   syscall.RawConn
	closed  atomic.Bool

	// Read state, used by the one ReadBatch that may run at a time. readFn
	// is t.readFrame, bound once so that a read allocates nothing.
	iov     [2]unix.Iovec // the caller's buffer, then spare
	spare   [1]byte       // a byte past the buffer: a frame that reaches it is too long
	wait    bool          // readFrame lets the poller wait when nothing is queued
	rn      int           // readFrame's result
	rerrno  unix.Errno
	readFn  func(fd uintptr) bool
	probeFn func(fd uintptr)
	waitFn  func(fd uintptr) bool // WaitRead's (waitReadable)
	waited  bool
	pollfd  [1]unix.PollFd

	// With offloads (IFF_VNET_HDR): a virtio_net_hdr precedes every frame.
	vnet      bool
	offloads  uint             // TUN_F_* the kernel accepted
	vhdr      [vnetHdrLen]byte // header of the frame read
	rbuf      []byte           // the frame read, up to a super-frame
	seg       segmenter        // the super-frame being cut, across ReadBatch calls
	wpool     sync.Pool        // *tapWriter, one per concurrent WriteBatch
	bad       atomic.Uint64    // offload frames dropped as malformed
	segmented atomic.Uint64    // super-frames read and cut
	coalesced atomic.Uint64    // super-frames written
}

var (
	_ Port    = (*TAP)(nil)
	_ Carrier = (*TAP)(nil)
	_ Poller  = (*TAP)(nil)
)

// OpenTAP opens the TAP device name, creating it when it does not exist
// (Created reports that) and attaching to it when it already exists as a
// persistent device, such as one made by `ip tuntap add` or given to Open
// vSwitch; an existing device is never recreated. It brings the link up.
// A TAP that OpenTAP created disappears on Close; one that existed stays.
//
// OpenTAP works in the network namespace of the calling thread: a caller that
// switches namespaces locks its OS thread around the call. The errors name
// the fix: a missing tun module, missing privileges, a device in use by
// another process, an invalid name.
func OpenTAP(name string) (*TAP, error) { return OpenTAPWith(name, TAPOptions{}) }

// TAPOptions are the settings of OpenTAPWith.
type TAPOptions struct {
	// Offload opens the TAP with IFF_VNET_HDR and asks the kernel for TCP
	// and UDP segmentation and checksum offloads: a read may then yield a
	// 64 KiB super-frame that ReadBatch cuts into segments, and WriteBatch
	// glues consecutive segments of a TCP flow into one super-frame. Both
	// save most of the per-frame cost in the kernel.
	Offload bool
}

// OpenTAPWith is OpenTAP with options.
func OpenTAPWith(name string, o TAPOptions) (*TAP, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, tapError(name, stepOpen, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	// IFF_TUN_EXCL makes TUNSETIFF fail with EBUSY when the device exists,
	// so that creating and attaching are told apart without a race.
	step := stepCreate
	flags := uint16(tapFlags)
	if o.Offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags | unix.IFF_TUN_EXCL)
	err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	if errors.Is(err, unix.EBUSY) {
		step = stepAttach
		ifr.SetUint16(flags)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, tapError(name, step, err)
	}
	// Non-blocking before Go's poller sees the fd, so that the poller manages
	// it and Close unblocks a blocked read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	t := &TAP{name: ifr.Name(), created: step == stepCreate}
	if o.Offload {
		t.vnet = true
		t.offloads = setOffloads(fd)
		t.rbuf = make([]byte, maxSuperFrame+1)
		t.wpool.New = func() any { return newTAPWriter() }
	}
	t.f = os.NewFile(uintptr(fd), "/dev/net/tun")
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.f.Close()
		return nil, fmt.Errorf("open tap %q: control socket: %w", name, err)
	}
	t.ctl = os.NewFile(uintptr(sock), "tap control socket")
	if t.rc, err = t.f.SyscallConn(); err == nil {
		t.ctlRC, err = t.ctl.SyscallConn()
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	t.iov[1].Base = &t.spare[0]
	t.iov[1].SetLen(len(t.spare))
	t.readFn = t.readFrame
	t.probeFn = func(fd uintptr) { t.readFrame(fd) }
	t.waitFn = t.waitReadable
	if err := t.setUp(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// checkName applies the kernel's rules for interface names, and refuses
// control characters too, so that a bad name gets its own message rather
// than EINVAL.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty device name")
	}
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("device name too long (%d bytes): use at most %d", len(name), unix.IFNAMSIZ-1)
	}
	if name == "." || name == ".." {
		return errors.New("invalid device name")
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '/', c == ':', c == ' ', c <= 0x1f, c == 0x7f, c == 0xa0:
			return fmt.Errorf("invalid device name: byte %q is not allowed (no '/', ':', spaces or control characters)", c)
		}
	}
	return nil
}

// step is the stage of OpenTAP an error comes from.
type step int

const (
	stepOpen   step = iota // opening /dev/net/tun
	stepCreate             // TUNSETIFF creating a device
	stepAttach             // TUNSETIFF attaching to an existing device
	stepUp                 // bringing the link up
)

// tapError turns an error of OpenTAP into one line that names the fix.
func tapError(name string, s step, err error) error {
	switch {
	case s == stepOpen && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)):
		return fmt.Errorf("open tap %q: /dev/net/tun missing (%w): load the tun module (modprobe tun), or in a container pass the device (--device /dev/net/tun)", name, err)
	case s == stepOpen && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)):
		return fmt.Errorf("open tap %q: /dev/net/tun: %w: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep %s) and give /dev/net/tun its usual mode 0666; in a container pass the device (--device /dev/net/tun)", name, err, selfPath())
	case s == stepUp && errors.Is(err, unix.EPERM):
		return fmt.Errorf("open tap %q: bring the link up: %w: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep %s), or bring it up beforehand (ip link set %s up)", name, err, selfPath(), name)
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("open tap %q: %w: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep %s)", name, err, selfPath())
	case s == stepAttach && errors.Is(err, unix.EBUSY):
		return fmt.Errorf("open tap %q: %w: another process has the device open; stop it or pick another name", name, err)
	case s == stepAttach && errors.Is(err, unix.EINVAL):
		return fmt.Errorf("open tap %q: %w: a device of that name exists and is not a single-queue TAP; delete it or pick another name", name, err)
	case s == stepCreate && errors.Is(err, unix.EINVAL):
		return fmt.Errorf("open tap %q: %w: the kernel refused the device name", name, err)
	case s == stepUp:
		return fmt.Errorf("open tap %q: bring the link up: %w", name, err)
	}
	return fmt.Errorf("open tap %q: %w", name, err)
}

// selfPath names this program for a setcap hint.
func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "/path/to/cab"
}

// opError wraps err from operation op on the TAP: net.ErrClosed once Close
// has run, and a plain word for a device deleted underneath.
func (t *TAP) opError(op string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case t.closed.Load() || errors.Is(err, os.ErrClosed):
		err = net.ErrClosed
	case errors.Is(err, unix.EBADFD):
		return fmt.Errorf("tap %q: %s: the device was deleted: %w", t.name, op, err)
	}
	return fmt.Errorf("tap %q: %s: %w", t.name, op, err)
}

// ctlIoctl runs an interface ioctl in the TAP's network namespace.
func (t *TAP) ctlIoctl(req uint, ifr *unix.Ifreq) error {
	var err error
	if cerr := t.ctlRC.Control(func(fd uintptr) { err = unix.IoctlIfreq(int(fd), req, ifr) }); cerr != nil {
		return cerr
	}
	return err
}

// ioctl is ctlIoctl with its error wrapped for operation op.
func (t *TAP) ioctl(op string, req uint, ifr *unix.Ifreq) error {
	if err := t.ctlIoctl(req, ifr); err != nil {
		return t.opError(op, err)
	}
	return nil
}

func (t *TAP) setUp() error {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ctlIoctl(unix.SIOCGIFFLAGS, ifr); err != nil {
		return tapError(t.name, stepUp, err)
	}
	if ifr.Uint16()&unix.IFF_UP != 0 {
		return nil // a persistent device may be up already, and then needs no privilege
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := t.ctlIoctl(unix.SIOCSIFFLAGS, ifr); err != nil {
		return tapError(t.name, stepUp, err)
	}
	return nil
}

// Name returns the device name.
func (t *TAP) Name() string { return t.name }

// Created reports whether OpenTAP created the device (and Close removes it).
func (t *TAP) Created() bool { return t.created }

// MTU returns the device's MTU.
func (t *TAP) MTU() (int, error) {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ioctl("get mtu", unix.SIOCGIFMTU, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// SetMTU sets the device's MTU.
func (t *TAP) SetMTU(mtu int) error {
	if mtu <= 0 || mtu > 1<<16 {
		return fmt.Errorf("tap %q: set mtu %d: out of range", t.name, mtu)
	}
	ifr, _ := unix.NewIfreq(t.name)
	ifr.SetUint32(uint32(mtu))
	return t.ioctl(fmt.Sprintf("set mtu %d", mtu), unix.SIOCSIFMTU, ifr)
}

// SetCarrier implements Carrier: it turns the device's carrier on or off
// (TUNSETCARRIER), which `ip link` shows as LOWER_UP or NO-CARRIER. A
// kernel older than 5.0 refuses it.
func (t *TAP) SetCarrier(up bool) error {
	if t.closed.Load() {
		return t.opError("set carrier", net.ErrClosed)
	}
	v := 0
	if up {
		v = 1
	}
	var err error
	if cerr := t.rc.Control(func(fd uintptr) { err = unix.IoctlSetPointerInt(int(fd), unix.TUNSETCARRIER, v) }); cerr != nil {
		err = cerr
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY):
		return fmt.Errorf("tap %q: set carrier: %w: the kernel has no TUNSETCARRIER (Linux 5.0 or later has it)", t.name, err)
	}
	return t.opError("set carrier", err)
}

// hwAddr returns the MAC address field of ifr: struct ifreq holds the name,
// then a struct sockaddr (a 2-byte family, then the address).
func hwAddr(ifr *unix.Ifreq) []byte {
	raw := (*[unix.IFNAMSIZ + 16]byte)(unsafe.Pointer(ifr))
	return raw[unix.IFNAMSIZ+2 : unix.IFNAMSIZ+2+6]
}

// HardwareAddr returns the device's MAC address.
func (t *TAP) HardwareAddr() (net.HardwareAddr, error) {
	ifr, _ := unix.NewIfreq(t.name)
	if err := t.ioctl("get MAC", unix.SIOCGIFHWADDR, ifr); err != nil {
		return nil, err
	}
	return net.HardwareAddr(append([]byte(nil), hwAddr(ifr)...)), nil
}

// SetHardwareAddr sets the device's MAC address, a 6-byte unicast address.
func (t *TAP) SetHardwareAddr(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("tap %q: set MAC %v: not 6 bytes", t.name, mac)
	}
	ifr, _ := unix.NewIfreq(t.name)
	ifr.SetUint16(unix.ARPHRD_ETHER) // sa_family, where SetUint16 writes
	copy(hwAddr(ifr), mac)
	return t.ioctl(fmt.Sprintf("set MAC %v", mac), unix.SIOCSIFHWADDR, ifr)
}

// readFrame reads one frame into t.iov through the raw descriptor fd, looping
// on EINTR. It returns false, so that the poller waits, only when t.wait is
// set and nothing is queued.
func (t *TAP) readFrame(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&t.iov[0])), uintptr(len(t.iov)))
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN && t.wait {
			return false
		}
		t.rn, t.rerrno = int(n), e
		return true
	}
}

// rawRead reads one frame into t.iov (readFrame's result in t.rn and
// t.rerrno), waiting for one when wait is set. Without waiting it takes no
// read lock of the descriptor, which a WaitRead parked in the poller holds.
func (t *TAP) rawRead(wait bool) error {
	t.wait = wait
	if !wait {
		return t.rc.Control(t.probeFn)
	}
	err := t.rc.Read(t.readFn)
	if err != nil && !t.closed.Load() {
		// The poller saw an error condition on the descriptor (EPOLLERR,
		// when the device is deleted) and says only "not pollable": read
		// directly to learn the errno.
		t.wait = false
		if t.rc.Control(t.probeFn) == nil && t.rerrno != unix.EAGAIN {
			err = nil // the direct read's result stands
		}
	}
	return err
}

// read reads one frame into b, waiting for one when wait is set. It returns
// 0 for a frame it dropped: shorter than an Ethernet header, or longer than
// b (the kernel truncates it; the spare byte tells). Errors are returned
// unwrapped, EAGAIN among them.
func (t *TAP) read(b []byte, wait bool) (int, error) {
	t.iov[0] = unix.Iovec{}
	if len(b) > 0 {
		t.iov[0].Base = &b[0]
		t.iov[0].SetLen(len(b))
	}
	err := t.rawRead(wait)
	t.iov[0] = unix.Iovec{} // keep no reference to the caller's buffer
	switch {
	case err != nil:
		return 0, err
	case t.rerrno != 0:
		return 0, t.rerrno
	case t.rn < ethHeaderLen || t.rn > len(b):
		return 0, nil
	}
	return t.rn, nil
}

// ReadBatch implements Port: one blocking read of a frame into
// bufs[0][offset:], then, without blocking, the frames that are already
// queued, up to len(bufs) in all. It allocates nothing. A first buffer with
// no room for an Ethernet header at offset is an error.
func (t *TAP) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.readBatch(bufs, sizes, offset, true)
}

// TryReadBatch implements Poller: ReadBatch without waiting for the first
// frame.
func (t *TAP) TryReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.readBatch(bufs, sizes, offset, false)
}

// WaitRead implements Poller: it waits until the TAP is readable.
func (t *TAP) WaitRead() error {
	if err := t.rc.Read(t.waitFn); err != nil {
		t.waited = false
		return t.opError("read", err)
	}
	return nil
}

// waitReadable is WaitRead's function for the poller: the poller has just
// forgotten any readiness it saw (the descriptor is edge-triggered), so it
// asks the kernel whether a frame is queued, and lets the poller wait, once,
// only when none is.
func (t *TAP) waitReadable(fd uintptr) bool {
	if t.waited {
		t.waited = false
		return true
	}
	t.pollfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	if n, err := unix.Poll(t.pollfd[:], 0); err != nil || n > 0 {
		return true
	}
	t.waited = true
	return false
}

func (t *TAP) readBatch(bufs [][]byte, sizes []int, offset int, wait bool) (int, error) {
	max := min(len(bufs), len(sizes))
	if max == 0 {
		return 0, nil
	}
	if len(bufs[0])-offset < ethHeaderLen {
		return 0, fmt.Errorf("tap %q: read: a buffer of %d bytes has no room for a frame at offset %d", t.name, len(bufs[0]), offset)
	}
	if t.vnet {
		return t.readBatchVnet(bufs[:max], sizes, offset, wait)
	}
	n := 0
	for tries := 0; n == 0; tries++ {
		size, err := t.read(bufs[0][offset:], wait)
		if err != nil {
			if !wait && err == unix.EAGAIN {
				return 0, nil
			}
			return 0, t.opError("read", err)
		}
		if size > 0 {
			sizes[0] = size
			n = 1
		} else if !wait && tries >= 2*max {
			return 0, nil // a stream of dropped frames: the caller comes back
		}
	}
	// Drain what is queued; bounded, so that a stream of dropped frames
	// cannot hold the batch back.
	for tries := 0; n < max && tries < 2*max; tries++ {
		var b []byte
		if offset < len(bufs[n]) {
			b = bufs[n][offset:]
		}
		size, err := t.read(b, false)
		if err != nil {
			break // EAGAIN: nothing queued; anything else comes back on the next call
		}
		if size > 0 {
			sizes[n] = size
			n++
		}
	}
	return n, nil
}

// WriteBatch implements Port: one write per frame. A frame shorter than an
// Ethernet header, or one the kernel refuses, is dropped; a deleted device
// and a closed TAP are errors.
func (t *TAP) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if t.closed.Load() {
		return 0, t.opError("write", net.ErrClosed)
	}
	if t.vnet {
		return t.writeBatchVnet(bufs, offset)
	}
	for i, b := range bufs {
		if len(b)-offset < ethHeaderLen {
			continue
		}
		frame := b[offset:]
		_, err := t.f.Write(frame)
		if err != nil && !t.closed.Load() && !hasErrno(err) {
			err = t.writeDirect(frame) // the poller's error, without the errno (see read)
		}
		if err != nil && (t.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD)) {
			return i, t.opError("write", err)
		}
	}
	return len(bufs), nil
}

// hasErrno reports whether err carries an errno.
func hasErrno(err error) bool {
	var errno unix.Errno
	return errors.As(err, &errno)
}

// writeDirect writes frame bypassing the poller, to learn the errno of an
// error condition the poller reports without one.
func (t *TAP) writeDirect(frame []byte) error {
	var err error
	if cerr := t.rc.Control(func(fd uintptr) { _, err = unix.Write(int(fd), frame) }); cerr != nil {
		return cerr
	}
	return err
}

// Close implements Port. A blocked ReadBatch returns net.ErrClosed; a device
// that OpenTAP created disappears. A second Close returns net.ErrClosed.
func (t *TAP) Close() error {
	if t.closed.Swap(true) {
		return t.opError("close", net.ErrClosed)
	}
	err := t.f.Close()
	if t.ctl != nil {
		t.ctl.Close()
	}
	if err != nil {
		return fmt.Errorf("tap %q: close: %w", t.name, err)
	}
	return nil
}
