package quic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"cab/transport"
)

// Server limits.
const (
	// MaxConns is how many connections a server keeps open at once,
	// counting those still in their QUIC handshake.
	MaxConns = 1024
	// DefaultPerIP is how many connections one IP address may hold.
	DefaultPerIP = 8
	// DefaultUnusedTimeout is how long a server keeps a connection that
	// the cable has not vouched for (transport.Authenticator): a client
	// that completed TLS but not cab's handshake.
	DefaultUnusedTimeout = 5 * time.Second
	// DefaultIdleTimeout is how long a server keeps a connection that the
	// cable sent nothing on lately (its peer went down or moved).
	DefaultIdleTimeout = 3 * time.Minute
)

// ServerConfig configures a Server. The zero value listens with a
// self-signed certificate and ALPN h3.
type ServerConfig struct {
	CertFile, KeyFile string        // PEM certificate and key; both empty: self-signed
	ALPN              string        // TLS application protocol; "" is DefaultALPN
	UnusedTimeout     time.Duration // 0: DefaultUnusedTimeout
	IdleTimeout       time.Duration // 0: DefaultIdleTimeout
	MaxConns          int           // 0: MaxConns
	PerIP             int           // connections one IP address may hold; 0: DefaultPerIP
	// ResetKey makes the stateless reset tokens. One that stays the same
	// across restarts (derived from the cable's key) lets a restarted
	// server end its clients' old connections at once, so they dial
	// again instead of waiting out the idle timeout. nil: a random one.
	ResetKey *[32]byte
}

// Server is a transport.Conn that accepts QUIC connections on a UDP
// socket: every connection is one Addr.
type Server struct {
	base
	pc    net.PacketConn
	tr    *quic.Transport
	ln    *quic.Listener
	cfg   ServerConfig
	stop  context.CancelFunc
	mu    sync.RWMutex
	conns map[*end]*quic.Conn

	// Connections by IP address and in all, from the first Initial that
	// quic-go takes to the close, and how many are still in their QUIC
	// handshake.
	slotMu      sync.Mutex
	perIP       map[netip.Addr]int
	slots       int
	handshaking atomic.Int64
}

var (
	_ transport.Conn          = (*Server)(nil)
	_ transport.Schemer       = (*Server)(nil)
	_ transport.PathMTUer     = (*Server)(nil)
	_ transport.SelfProber    = (*Server)(nil)
	_ transport.RTTer         = (*Server)(nil)
	_ transport.DropCounter   = (*Server)(nil)
	_ transport.Authenticator = (*Server)(nil)
)

// slotKey finds a connection's slot in its context.
type slotKey struct{}

// slot is one connection's place in the server's counts.
type slot struct {
	ip       netip.Addr
	accepted atomic.Bool
}

// Listen listens for QUIC on the UDP address addr ("host:port", ":port").
func Listen(addr string, cfg ServerConfig) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen quic: %w", err)
	}
	s, err := Serve(uc, cfg)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return s, nil
}

// Serve makes a Server of the UDP socket pc, which it closes on Close.
func Serve(pc net.PacketConn, cfg ServerConfig) (*Server, error) {
	if cfg.ALPN == "" {
		cfg.ALPN = DefaultALPN
	}
	if cfg.UnusedTimeout <= 0 {
		cfg.UnusedTimeout = DefaultUnusedTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = MaxConns
	}
	if cfg.PerIP <= 0 {
		cfg.PerIP = DefaultPerIP
	}
	tc, err := serverTLS(cfg.CertFile, cfg.KeyFile, cfg.ALPN)
	if err != nil {
		return nil, err
	}
	s := &Server{base: newBase(), pc: pc, cfg: cfg, conns: make(map[*end]*quic.Conn), perIP: make(map[netip.Addr]int)}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: (*quic.StatelessResetKey)(cfg.ResetKey),
		VerifySourceAddress: s.verifySource, ConnContext: s.connContext}
	ln, err := tr.Listen(tc, quicConfig(0))
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("listen quic: %w", err) // the caller closes pc
	}
	s.tr, s.ln = tr, ln
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(2)
	go s.acceptLoop(ctx)
	go s.reaper()
	return s, nil
}

// verifySource says that quic-go answers every Initial without a token
// with a Retry (RFC 9000 8.1.2): a client pays one round trip more per
// connection, and an address that has not shown it receives there gets
// nothing larger than its Initial and leaves no state. Without it quic-go
// answers a spoofed pair of Initials (a ClientHello with a post-quantum
// key share takes two) with about 3.3 times their bytes.
func (s *Server) verifySource(net.Addr) bool { return true }

// connContext admits a new connection, before its TLS handshake, when its
// IP address and the server have room; quic-go refuses the others with
// CONNECTION_REFUSED, a packet smaller than their Initial.
func (s *Server) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	var ip netip.Addr
	if ua, ok := ci.RemoteAddr.(*net.UDPAddr); ok {
		ip = ua.AddrPort().Addr().Unmap()
	}
	s.slotMu.Lock()
	switch {
	case s.slots >= s.cfg.MaxConns:
		s.slotMu.Unlock()
		s.ctr.refused.Add(1)
		return nil, errors.New("quic: server full")
	case s.perIP[ip] >= s.cfg.PerIP:
		s.slotMu.Unlock()
		s.ctr.refusedIP.Add(1)
		return nil, errors.New("quic: too many connections from one address")
	}
	s.slots++
	s.perIP[ip]++
	s.slotMu.Unlock()
	s.handshaking.Add(1)
	sl := &slot{ip: ip}
	context.AfterFunc(ctx, func() { s.release(sl) })
	return context.WithValue(ctx, slotKey{}, sl), nil
}

// release gives back a closed connection's slot.
func (s *Server) release(sl *slot) {
	if !sl.accepted.Load() {
		s.handshaking.Add(-1)
	}
	s.slotMu.Lock()
	s.slots--
	if s.perIP[sl.ip]--; s.perIP[sl.ip] <= 0 {
		delete(s.perIP, sl.ip)
	}
	s.slotMu.Unlock()
}

// Authenticated implements transport.Authenticator: the connection a
// names completed a cab handshake and stays open.
func (s *Server) Authenticated(a transport.Addr) {
	if qa, ok := a.(Addr); ok && qa.e != nil && qa.e.srv == s {
		qa.e.authed.Store(true)
	}
}

// Addr returns the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Conns returns how many connections are open.
func (s *Server) Conns() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

func (s *Server) acceptLoop(ctx context.Context) {
	defer s.wg.Done()
	for {
		qc, err := s.ln.Accept(ctx)
		if err != nil {
			if s.isClosed() || errors.Is(err, quic.ErrServerClosed) || ctx.Err() != nil {
				return
			}
			select { // not expected: wait a little rather than spin
			case <-time.After(50 * time.Millisecond):
			case <-s.closed:
				return
			}
			continue
		}
		if sl, ok := qc.Context().Value(slotKey{}).(*slot); ok && sl.accepted.CompareAndSwap(false, true) {
			s.handshaking.Add(-1)
		}
		if !qc.ConnectionState().SupportsDatagrams.Remote {
			s.ctr.refused.Add(1)
			qc.CloseWithError(appNoError, "")
			continue
		}
		now := time.Now().UnixNano()
		e := &end{name: qc.RemoteAddr().String(), queue: newDropQueue(queuePackets), srv: s}
		e.since.Store(now)
		e.cur.Store(qc)
		s.mu.Lock()
		if len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.ctr.refused.Add(1)
			qc.CloseWithError(appNoError, "")
			continue
		}
		s.conns[e] = qc
		s.mu.Unlock()
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			s.receive(qc, e)
		}()
		go func() {
			defer s.wg.Done()
			s.send(qc, e)
			qc.CloseWithError(appNoError, "")
			<-qc.Context().Done()
			s.mu.Lock()
			delete(s.conns, e)
			s.mu.Unlock()
		}()
	}
}

// reaper closes connections the cable does not use: not vouched for
// within UnusedTimeout of the handshake, or not written to within
// IdleTimeout lately.
func (s *Server) reaper() {
	defer s.wg.Done()
	tick := time.NewTicker(min(time.Second, s.cfg.UnusedTimeout/4))
	defer tick.Stop()
	var stale []*quic.Conn
	for {
		select {
		case <-tick.C:
		case <-s.closed:
			return
		}
		now := time.Now().UnixNano()
		stale = stale[:0]
		s.mu.RLock()
		for e, qc := range s.conns {
			last := e.lastWrite.Load()
			switch {
			case !e.authed.Load() && now-e.since.Load() > int64(s.cfg.UnusedTimeout):
				s.ctr.unused.Add(1)
				stale = append(stale, qc)
			case last != 0 && now-last > int64(s.cfg.IdleTimeout):
				stale = append(stale, qc)
			}
		}
		s.mu.RUnlock()
		for _, qc := range stale {
			qc.CloseWithError(appNoError, "")
		}
	}
}

// WriteBatch implements transport.Conn: each packet is queued for the
// connection its Addr names; a packet for a connection that is gone is
// lost.
func (s *Server) WriteBatch(ps []transport.Packet) error {
	if s.isClosed() {
		return fmt.Errorf("quic write: %w", net.ErrClosed)
	}
	var err error
	now := time.Now().UnixNano()
	for _, p := range ps {
		if len(p.B) > MaxPacket || len(p.B) == 0 {
			if err == nil && len(p.B) > MaxPacket {
				err = &transport.TooBigError{Len: len(p.B), Max: MaxPacket}
			}
			continue
		}
		a, _ := p.Addr.(Addr)
		if a.e == nil || a.e.srv != s || a.e.cur.Load() == nil || a.e.cur.Load().Context().Err() != nil {
			s.ctr.noConn.Add(1)
			continue
		}
		a.e.lastWrite.Store(now)
		if !a.e.queue.put(p.B, now) {
			s.ctr.queueFull.Add(1)
		}
	}
	return err
}

// PathMTU returns the largest packet addr's connection carries now.
func (s *Server) PathMTU(addr transport.Addr) int {
	a, _ := addr.(Addr)
	return pathMTU(a.e)
}

// RTT returns the smoothed round-trip time of addr's connection.
func (s *Server) RTT(addr transport.Addr) time.Duration {
	a, _ := addr.(Addr)
	return rtt(a.e)
}

// Close closes the listener and every connection.
func (s *Server) Close() error {
	return s.closeBase(func() {
		s.stop()
		s.ln.Close()
		s.mu.RLock()
		for _, qc := range s.conns {
			qc.CloseWithError(appNoError, "")
		}
		s.mu.RUnlock()
		s.tr.Close()
		s.pc.Close()
	})
}
