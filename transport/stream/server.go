package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cab/transport"
)

// Server limits: streams open at once, and how long a stream may send
// nothing before it is closed (cab's keepalives come every 25 s).
const (
	MaxStreams = 1024
	serverIdle = 3 * time.Minute
)

// Server is a transport.Conn over a listener: every accepted stream is one
// Addr, and WriteBatch sends each packet on the stream its Addr names.
type Server struct {
	base
	l net.Listener

	mu      sync.RWMutex
	streams map[Addr]*stream
	nextID  uint64
}

var (
	_ transport.Conn      = (*Server)(nil)
	_ transport.Schemer   = (*Server)(nil)
	_ transport.PathMTUer = (*Server)(nil)
)

// ListenTCP listens on the TCP address addr ("host:port", ":port").
// Accepted connections get TCP_NODELAY, a small TCP_NOTSENT_LOWAT (so that
// the kernel does not queue seconds of frames), keepalives and
// TCP_USER_TIMEOUT, so that a half-open connection dies within about 20 s.
func ListenTCP(addr string) (*Server, error) {
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return Serve(l, "tcp"), nil
}

// ListenUnix listens on a unix stream socket at path, mode 0600. A socket
// file left by a process that is gone is replaced; one that answers is
// not.
func ListenUnix(path string) (*Server, error) { return listenUnix(path, "unix") }

// ListenPipe is ListenUnix for the far end of the SSH transport: `cab pipe`
// joins the stdio of an SSH session to it, and its streams say "ssh".
func ListenPipe(path string) (*Server, error) { return listenUnix(path, "ssh") }

func listenUnix(path, scheme string) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen unix %s: %w: another process listens there", path, syscall.EADDRINUSE)
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err // names the operation and the path
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	return Serve(l, scheme), nil
}

// Serve makes a Server of l; scheme names it ("tcp", "unix").
func Serve(l net.Listener, scheme string) *Server {
	s := &Server{base: newBase(scheme), l: l, streams: make(map[Addr]*stream)}
	s.idle = serverIdle
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Streams returns how many streams are open.
func (s *Server) Streams() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.streams)
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			select { // EMFILE and the like: wait a little
			case <-time.After(50 * time.Millisecond):
			case <-s.closed:
				return
			}
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tuneTCP(tc)
		}
		s.mu.Lock()
		if len(s.streams) >= MaxStreams {
			s.mu.Unlock()
			c.Close()
			s.drops.Add(1)
			continue
		}
		s.nextID++
		remote := s.l.Addr().String()
		if ra := c.RemoteAddr(); ra != nil && ra.String() != "" && ra.String() != "@" {
			remote = ra.String()
		}
		st := newStream(Addr{scheme: s.scheme, id: s.nextID, remote: remote}, c)
		s.streams[st.addr] = st
		s.mu.Unlock()
		s.run(st, func() {
			s.mu.Lock()
			delete(s.streams, st.addr)
			s.mu.Unlock()
		})
	}
}

// tuneTCP sets what a stream of sealed frames wants from TCP.
func tuneTCP(c *net.TCPConn) {
	c.SetNoDelay(true)
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 16<<10)
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 20000)
		})
	}
}

// WriteBatch implements transport.Conn: each packet is queued on the
// stream its Addr names; a packet for a stream that is gone is lost.
func (s *Server) WriteBatch(ps []transport.Packet) error {
	if s.isClosed() {
		return fmt.Errorf("%s write: %w", s.scheme, net.ErrClosed)
	}
	var err error
	now := time.Now().UnixNano()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range ps {
		if len(p.B) > MaxPacket || len(p.B) == 0 {
			if err == nil && len(p.B) > MaxPacket {
				err = tooBig(len(p.B))
			}
			continue
		}
		a, _ := p.Addr.(Addr)
		st := s.streams[a]
		if st == nil {
			s.drops.Add(1)
			continue
		}
		s.enqueue(st.queue, p.B, now)
	}
	return err
}

// Close closes the listener and every stream.
func (s *Server) Close() error {
	return s.closeBase(func() { s.l.Close() })
}
