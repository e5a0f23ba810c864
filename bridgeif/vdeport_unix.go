package bridgeif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The classic vde_switch control protocol (research: vde.md, section 1):
// a request on DIR/ctl, host byte order, one write:
//
//	magic 0xfeedface (4) | version 3 (4) | type = port<<8 | 0 (4)
//	| sockaddr_un of our datagram socket (110) | description (no NUL)
//
// answered by the 110-byte sockaddr_un of the switch's data socket for
// this port, DIR/NNN.F. Then one frame per unix datagram. The switch
// frees the port when the control stream closes, and cab notices the
// switch dying when the stream ends.
const (
	vdeMagic    = 0xfeedface
	vdeVersion  = 3
	vdeSunLen   = 110 // sizeof(struct sockaddr_un)
	vdeReqFixed = 12 + vdeSunLen
	vdeMaxDescr = 256 - vdeReqFixed // the switch reads at most 256 bytes
	// VDEMaxFrame is the longest frame a classic vde_switch passes whole
	// (14 + 1504); it truncates longer datagrams, so the port drops them.
	VDEMaxFrame = 1518
)

// VDEOptions tune OpenVDE. The zero value asks for any free port.
type VDEOptions struct {
	Port        int           // switch port to ask for; 0: any free port
	Description string        // shown by the switch's port/print; default "cab"
	Timeout     time.Duration // for the switch's answer; default 2s
	Logger      *slog.Logger  // for "switch gone" and "switch back"; default slog.Default()
}

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

// ParseVDESpec parses "DIR", "DIR[N]" or vdeplug4's "vde:///DIR[N]".
func ParseVDESpec(s string) (dir string, port int, err error) {
	s = strings.TrimPrefix(s, "vde://")
	dir = s
	if i := strings.IndexByte(s, '['); i >= 0 {
		if !strings.HasSuffix(s, "]") {
			return "", 0, fmt.Errorf("vde %q: a port goes in brackets at the end: DIR[N]", s)
		}
		dir = s[:i]
		if p := s[i+1 : len(s)-1]; p != "" {
			port, err = strconv.Atoi(p)
			if err != nil || port < 0 || port > 0xffffff {
				return "", 0, fmt.Errorf("vde %q: port %q is not a number", s, p)
			}
		}
	}
	if dir == "" {
		return "", 0, fmt.Errorf("vde %q: no switch directory", s)
	}
	return dir, port, nil
}

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

// encodeRequest builds a v3 request for port, for our socket at sun.
func encodeRequest(port int, sun, descr string) []byte {
	if len(descr) > vdeMaxDescr {
		descr = descr[:vdeMaxDescr]
	}
	b := make([]byte, vdeReqFixed, vdeReqFixed+len(descr))
	binary.NativeEndian.PutUint32(b[0:], vdeMagic)
	binary.NativeEndian.PutUint32(b[4:], vdeVersion)
	binary.NativeEndian.PutUint32(b[8:], uint32(port)<<8)
	binary.NativeEndian.PutUint16(b[12:], unix.AF_UNIX)
	copy(b[14:vdeReqFixed], sun)
	return append(b, descr...)
}

// parseReply reads the switch's answer: the path of its data socket, and
// the port number in its name (DIR/NNN.F).
func parseReply(b []byte) (path string, port int, err error) {
	if len(b) != vdeSunLen || binary.NativeEndian.Uint16(b[0:2]) != unix.AF_UNIX {
		return "", 0, errors.New("vde: the switch's answer is not a unix socket address")
	}
	name := b[2:]
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	if len(name) == 0 {
		return "", 0, errors.New("vde: the switch answered with an empty path")
	}
	path = string(name)
	base := filepath.Base(path)
	if i := strings.IndexByte(base, '.'); i > 0 && strings.Trim(base[:i], "0123456789") == "" {
		port, _ = strconv.Atoi(base[:i]) // NNN.F; anything else: port unknown (0)
	}
	return path, port, nil
}

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
	data, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ours, Net: "unixgram"})
	if err != nil {
		ours = filepath.Join(os.TempDir(), "vde"+name)
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
		var m int
		var rerr error
		buf := bufs[n][offset:]
		if err := rc.Read(func(fd uintptr) bool {
			m, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			return true // never wait
		}); err != nil || rerr != nil {
			break
		}
		if m < 14 || m > len(buf) {
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
