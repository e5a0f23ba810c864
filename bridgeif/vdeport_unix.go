//go:build linux || freebsd || darwin

package bridgeif

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Verified: run on Linux by the tests of vde_linux_test.go against a real
// vde_switch; compiled for freebsd and darwin (amd64, arm64) by make cross,
// not run there. What differs there is the layout of struct sockaddr_un
// (sunLayout, whose BSD form TestVDERequestBSDLayout checks on Linux);
// reads tell a cut datagram by recvmsg's MSG_TRUNC flag, which all three
// set, not by Linux's MSG_TRUNC input flag.

// VDE is a port of a running classic vde_switch, spoken natively. When the
// switch goes away, the port plugs in again by itself when it is back;
// meanwhile reads wait and writes are dropped.
type VDE struct {
	dir  string
	opts VDEOptions

	mu      sync.Mutex    // guards cur, changed and closed
	cur     *vdePlug      // nil while unplugged
	changed chan struct{} // closed and replaced when cur changes or on Close
	closed  bool
	done    chan struct{}

	switchPort atomic.Int64
}

var _ Port = (*VDE)(nil)

// vdePlug is one connection to the switch.
type vdePlug struct {
	ctl  net.Conn
	data *net.UnixConn
	port int
}

var vdeSeq atomic.Uint32

// OpenVDE plugs into the vde_switch whose control directory is dir.
func OpenVDE(dir string, o VDEOptions) (*VDE, error) {
	if o.Description == "" {
		o.Description = "cab"
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	v := &VDE{dir: dir, opts: o, changed: make(chan struct{}), done: make(chan struct{})}
	p, err := v.plug()
	if err != nil {
		return nil, err
	}
	v.setPlug(p)
	return v, nil
}

// SwitchPort returns the switch port this port is plugged into.
func (v *VDE) SwitchPort() int { return int(v.switchPort.Load()) }

// plug does the handshake and returns a connected plug.
func (v *VDE) plug() (*vdePlug, error) {
	ctlPath := filepath.Join(v.dir, "ctl")
	st, err := os.Stat(ctlPath)
	if err != nil {
		return nil, fmt.Errorf("vde: no vde_switch at %s (start one with vde_switch -d -s %s): %w", v.dir, v.dir, err)
	}
	// Our datagram socket, in the switch's directory when we may write
	// there.
	name := fmt.Sprintf(".cab-%d-%d", os.Getpid(), vdeSeq.Add(1))
	ours := filepath.Join(v.dir, name)
	var data *net.UnixConn
	if len(ours) <= nativeSun.maxPath() {
		data, _ = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ours, Net: "unixgram"})
	}
	if data == nil {
		ours = filepath.Join(os.TempDir(), "vde"+name)
		if len(ours) > nativeSun.maxPath() {
			return nil, fmt.Errorf("vde: our data socket %s: longer than the %d bytes a unix socket path may have: set TMPDIR to a shorter directory", ours, nativeSun.maxPath())
		}
		if data, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ours, Net: "unixgram"}); err != nil {
			return nil, fmt.Errorf("vde: our data socket: %w", err)
		}
	}
	defer os.Remove(ours) // the switch connects to it during the handshake; the path is not needed after
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		os.Chown(ours, -1, int(sys.Gid)) // a switch run by another user must write to it
		os.Chmod(ours, 0o660)
	} else {
		os.Chmod(ours, 0o600)
	}
	data.SetReadBuffer(4 << 20)
	data.SetWriteBuffer(4 << 20)

	ctl, err := net.DialTimeout("unix", ctlPath, v.opts.Timeout)
	if err != nil {
		data.Close()
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("vde: %s: permission denied: run as the switch's user or give the switch -m 660 -g GROUP: %w", ctlPath, err)
		}
		return nil, fmt.Errorf("vde: no vde_switch answering at %s (start one with vde_switch -d -s %s): %w", v.dir, v.dir, err)
	}
	fail := func(err error) (*vdePlug, error) {
		ctl.Close()
		data.Close()
		return nil, err
	}
	ctl.SetDeadline(time.Now().Add(v.opts.Timeout))
	if _, err := ctl.Write(encodeRequest(v.opts.Port, ours, v.opts.Description)); err != nil {
		return fail(fmt.Errorf("vde: request: %w", err))
	}
	reply := make([]byte, vdeSunLen)
	if _, err := io.ReadFull(ctl, reply); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fail(fmt.Errorf("vde: the switch at %s did not answer within %v: is port %d free and below its limit (vde_switch -n)?", v.dir, v.opts.Timeout, v.opts.Port))
		}
		return fail(fmt.Errorf("vde: the switch at %s refused the port: %w", v.dir, err))
	}
	ctl.SetDeadline(time.Time{})
	path, port, err := parseReply(reply)
	if err != nil {
		return fail(err)
	}
	rc, err := data.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var cerr error
	rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), &unix.SockaddrUnix{Name: path}) })
	if cerr != nil {
		return fail(fmt.Errorf("vde: connect to the switch's socket %s: %w", path, cerr))
	}
	return &vdePlug{ctl: ctl, data: data, port: port}, nil
}

// setPlug makes p current and watches its control stream.
func (v *VDE) setPlug(p *vdePlug) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		p.ctl.Close()
		p.data.Close()
		return
	}
	v.cur = p
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	v.switchPort.Store(int64(p.port))
	go v.watch(p)
}

// watch waits for the switch to close p's control stream, then plugs in
// again when the switch is back.
func (v *VDE) watch(p *vdePlug) {
	var b [64]byte
	for {
		if _, err := p.ctl.Read(b[:]); err != nil {
			break
		}
	}
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.cur = nil
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	p.ctl.Close()
	p.data.Close()
	v.opts.Logger.Info("vde switch gone", "dir", v.dir)
	wait := 100 * time.Millisecond
	for {
		select {
		case <-v.done:
			return
		case <-time.After(wait):
		}
		np, err := v.plug()
		if err == nil {
			v.opts.Logger.Info("vde switch back", "dir", v.dir, "switch_port", np.port)
			v.setPlug(np)
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (v *VDE) current() (*vdePlug, chan struct{}, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur, v.changed, v.closed
}

// ReadBatch implements Port: one frame per call.
func (v *VDE) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		p, changed, closed := v.current()
		if closed {
			return 0, net.ErrClosed
		}
		if p == nil {
			<-changed
			continue
		}
		n, err := p.data.Read(bufs[0][offset:])
		if err != nil {
			if _, _, closed := v.current(); closed {
				return 0, net.ErrClosed
			}
			select { // the plug is being replaced
			case <-changed:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if n < 14 {
			continue
		}
		sizes[0] = n
		return 1 + v.readQueued(p, bufs[1:], sizes[1:], offset), nil
	}
}

// readQueued reads the frames already queued on p, without waiting.
func (v *VDE) readQueued(p *vdePlug, bufs [][]byte, sizes []int, offset int) int {
	rc, err := p.data.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	for n < len(bufs) {
		var m, flags int
		var rerr error
		buf := bufs[n][offset:]
		if err := rc.Read(func(fd uintptr) bool {
			m, _, flags, _, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			return true // never wait
		}); err != nil || rerr != nil {
			break
		}
		if m < 14 || flags&unix.MSG_TRUNC != 0 {
			continue // a runt, or too long for the caller's buffer
		}
		sizes[n] = m
		n++
	}
	return n
}

// WriteBatch implements Port. Frames the switch would truncate, runts, and
// frames written while the switch is away are dropped. The switch's queue
// is tiny: a full socket gets a few milliseconds before a frame is dropped.
func (v *VDE) WriteBatch(bufs [][]byte, offset int) (int, error) {
	p, _, closed := v.current()
	if closed {
		return 0, net.ErrClosed
	}
	if p == nil {
		return len(bufs), nil
	}
	p.data.SetWriteDeadline(time.Now().Add(5 * time.Millisecond))
	for _, b := range bufs {
		f := b[offset:]
		if len(f) < 14 || len(f) > VDEMaxFrame {
			continue
		}
		if _, err := p.data.Write(f); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			p.data.SetWriteDeadline(time.Now().Add(5 * time.Millisecond))
		}
	}
	return len(bufs), nil
}

// Close implements Port: it unplugs from the switch, which frees the port.
func (v *VDE) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	p := v.cur
	v.cur = nil
	close(v.changed)
	close(v.done)
	v.mu.Unlock()
	if p != nil {
		p.ctl.Close()
		p.data.Close()
	}
	return nil
}
