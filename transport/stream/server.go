package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"cab/transport"
)

// Server limits: streams open at once, streams from one IP address, how
// long a stream may stay before the cable vouches for it (a cab handshake
// takes one round trip), and how long a stream may send nothing before it
// is closed (cab's keepalives come every 25 s).
const (
	MaxStreams         = 1024
	DefaultPerIP       = 8
	DefaultAuthTimeout = 5 * time.Second
	serverIdle         = 3 * time.Minute
)

// Limits bound what strangers can hold open on a Server. A zero field is
// its default.
type Limits struct {
	MaxStreams int // streams open at once; 0: MaxStreams
	// PerIP is how many streams one IP address may hold (TCP only: every
	// stream of a unix socket comes from the same place); 0: DefaultPerIP.
	PerIP int
	// AuthTimeout is how long a stream may stay open before the cable
	// says that it completed a handshake (transport.Authenticator); one
	// that has not is closed and counted. 0: DefaultAuthTimeout.
	AuthTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = MaxStreams
	}
	if l.PerIP <= 0 {
		l.PerIP = DefaultPerIP
	}
	if l.AuthTimeout <= 0 {
		l.AuthTimeout = DefaultAuthTimeout
	}
	return l
}

// The TCP options Linux gets (tune_linux.go): the most unsent bytes the
// kernel queues, and how long sent data may go unacknowledged.
const (
	tcpNotSentLowat  = 16 << 10
	tcpUserTimeoutMs = 20000
)

// Server is a transport.Conn over a listener: every accepted stream is one
// Addr, and WriteBatch sends each packet on the stream its Addr names. A
// stream that the cable has not vouched for within Limits.AuthTimeout is
// closed, and one IP address holds at most Limits.PerIP streams, so that
// strangers cannot fill the server with idle connections.
type Server struct {
	base
	l net.Listener

	mu      sync.RWMutex
	streams map[Addr]*stream
	perIP   map[netip.Addr]int
	limits  Limits
	nextID  uint64

	refused    atomic.Uint64 // streams refused over MaxStreams
	refusedIP  atomic.Uint64 // streams refused over PerIP
	unauthTime atomic.Uint64 // streams closed unauthenticated after AuthTimeout
}

var (
	_ transport.Conn          = (*Server)(nil)
	_ transport.Schemer       = (*Server)(nil)
	_ transport.PathMTUer     = (*Server)(nil)
	_ transport.DropCounter   = (*Server)(nil)
	_ transport.Authenticator = (*Server)(nil)
)

// ListenTCP listens on the TCP address addr ("host:port", ":port").
// Accepted connections get TCP_NODELAY and keepalives, and on Linux a
// small TCP_NOTSENT_LOWAT (so that the kernel does not queue seconds of
// frames) and TCP_USER_TIMEOUT, so that a half-open connection dies within
// about 20 s (see tuneTCP).
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
	// Windows has no mode bits: there the socket file takes the access
	// list of its directory.
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen unix %s: %w", path, err)
		}
	}
	return Serve(l, scheme), nil
}

// Serve makes a Server of l; scheme names it ("tcp", "unix").
func Serve(l net.Listener, scheme string) *Server {
	s := &Server{base: newBase(scheme), l: l, streams: make(map[Addr]*stream), perIP: make(map[netip.Addr]int), limits: Limits{}.withDefaults()}
	s.idle = serverIdle
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// SetLimits changes the limits for the streams accepted from now on.
func (s *Server) SetLimits(l Limits) {
	s.mu.Lock()
	s.limits = l.withDefaults()
	s.mu.Unlock()
}

// Authenticated implements transport.Authenticator: the stream a names
// completed a handshake and stays open.
func (s *Server) Authenticated(a transport.Addr) {
	sa, ok := a.(Addr)
	if !ok {
		return
	}
	s.mu.RLock()
	st := s.streams[sa]
	s.mu.RUnlock()
	if st != nil && st.authed.CompareAndSwap(false, true) && st.timer != nil {
		st.timer.Stop()
	}
}

// DropCounts returns the non-zero counters by reason, for cab status.
func (s *Server) DropCounts() map[string]uint64 {
	m := s.base.DropCounts()
	for k, v := range map[string]uint64{"refused_streams": s.refused.Load(), "refused_per_ip": s.refusedIP.Load(),
		"unauthenticated_closed": s.unauthTime.Load()} {
		if v != 0 {
			m[k] = v
		}
	}
	return m
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
		var ip netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = ta.AddrPort().Addr().Unmap()
		}
		s.mu.Lock()
		lim := s.limits
		if len(s.streams) >= lim.MaxStreams {
			s.mu.Unlock()
			c.Close()
			s.refused.Add(1)
			continue
		}
		if ip.IsValid() && s.perIP[ip] >= lim.PerIP {
			s.mu.Unlock()
			c.Close()
			s.refusedIP.Add(1)
			continue
		}
		if ip.IsValid() {
			s.perIP[ip]++
		}
		s.nextID++
		remote := s.l.Addr().String()
		if ra := c.RemoteAddr(); ra != nil && ra.String() != "" && ra.String() != "@" {
			remote = ra.String()
		}
		st := newStream(Addr{scheme: s.scheme, id: s.nextID, remote: remote}, c)
		st.timer = time.AfterFunc(lim.AuthTimeout, func() {
			if !st.authed.Load() {
				s.unauthTime.Add(1)
				st.close()
			}
		})
		s.streams[st.addr] = st
		s.mu.Unlock()
		s.run(st, func() {
			st.timer.Stop()
			s.mu.Lock()
			delete(s.streams, st.addr)
			if ip.IsValid() {
				if s.perIP[ip]--; s.perIP[ip] <= 0 {
					delete(s.perIP, ip)
				}
			}
			s.mu.Unlock()
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
