package dnstun

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"cab/transport"
)

// Server is the tunnel's authoritative name server for one zone, on UDP
// and TCP, as a transport.Conn whose Addrs are the tunnel clients
// (ClientAddr).
type Server struct {
	core   *serverCore
	udp    net.PacketConn
	tcp    *dns.Server
	tcpL   *limitListener
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	log    *slog.Logger
	logged time.Time
}

var (
	_ transport.Conn          = (*Server)(nil)
	_ transport.Schemer       = (*Server)(nil)
	_ transport.PathMTUer     = (*Server)(nil)
	_ transport.DropCounter   = (*Server)(nil)
	_ transport.PathStatser   = (*Server)(nil)
	_ transport.Authenticator = (*Server)(nil)
	_ transport.Conn          = (*Client)(nil)
	_ transport.Schemer       = (*Client)(nil)
	_ transport.PathMTUer     = (*Client)(nil)
	_ transport.DropCounter   = (*Client)(nil)
	_ transport.PathStatser   = (*Client)(nil)
)

// Listen starts a Server for zone on addr ("host:port"), UDP and TCP.
func Listen(addr, zone string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	z, err := CanonicalZone(zone)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns: %w", err)
	}
	s := &Server{core: newServerCore(z, log), udp: pc, tcpL: newLimitListener(l, tcpPerIP, tcpTotal), done: make(chan struct{}), log: log}
	s.tcp = &dns.Server{Listener: s.tcpL, Net: "tcp", MaxTCPQueries: 1024, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			var ip netip.Addr
			if ta, ok := w.RemoteAddr().(*net.TCPAddr); ok {
				ip = ta.AddrPort().Addr()
			}
			if b := s.core.reply(r, 0, ip, false, time.Now()); b != nil {
				w.Write(b)
			}
		})}
	s.wg.Add(3)
	go s.udpLoop()
	go s.reportLoop()
	go func() {
		defer s.wg.Done()
		s.tcp.ActivateAndServe()
	}()
	return s, nil
}

// SetNoData makes the server answer NODATA instead of NXDOMAIN to queries
// of other types than TXT under the zone, which resolvers with strict QNAME
// minimisation need to reach the whole name; it costs relaxed resolvers
// more queries per tunnel query (about 5 instead of 2 with Unbound).
func (s *Server) SetNoData(on bool) {
	s.core.mu.Lock()
	s.core.nodata = on
	s.core.mu.Unlock()
}

// LocalAddr is the UDP address the server answers on.
func (s *Server) LocalAddr() net.Addr { return s.udp.LocalAddr() }

func (s *Server) udpLoop() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req := new(dns.Msg)
		if err := req.Unpack(buf[:n]); err != nil {
			s.core.mu.Lock()
			s.core.stats.badQueries++
			s.core.mu.Unlock()
			s.logBad(from, err)
			continue
		}
		var ip netip.Addr
		if ua, ok := from.(*net.UDPAddr); ok {
			ip = ua.AddrPort().Addr()
		}
		if b := s.core.reply(req, n, ip, true, time.Now()); b != nil {
			s.udp.WriteTo(b, from)
		}
	}
}

// DropCounts says, by reason, what the server refused or dropped: names
// that do not decode or name no session (NXDOMAIN), messages that do not
// parse, opens while the session table was full, sessions on probation
// that gave way to new ones, answers to strangers over their source's
// rate (dropped, or slipped: truncated), answers truncated to stay no larger than their query, TCP connections
// over the limits of their source or in all, and packets lost to full
// queues. cab status shows them.
func (s *Server) DropCounts() map[string]uint64 {
	s.core.mu.Lock()
	st := s.core.stats
	s.core.mu.Unlock()
	return map[string]uint64{"nxdomain": st.nxdomain, "undecodable": st.badQueries, "opens_while_full": st.full,
		"rx_queue_full": st.rxDrops, "tx_dropped": st.txDrops, "probation_evicted": st.evicted,
		"rrl_dropped": st.rrlDropped, "rrl_slipped": st.rrlSlipped,
		"truncated": st.truncated, "tcp_refused": s.tcpL.refused.Load()}
}

// Authenticated implements transport.Authenticator: the session a names
// carried a packet that completed a cab handshake, and leaves probation.
func (s *Server) Authenticated(a transport.Addr) {
	if ca, ok := a.(ClientAddr); ok {
		s.core.authenticate(ca.sid, time.Now())
	}
}

// reportLoop forgets idle sessions, and logs, once a minute when they grew, the queries the server
// refused: names that do not decode or name no session (NXDOMAIN),
// messages that do not parse (dropped), opens while full, packets lost to
// full queues.
func (s *Server) reportLoop() {
	defer s.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var last serverStats
	for i := 1; ; i++ {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.core.expire(time.Now())
		if i%6 != 0 {
			continue
		}
		s.core.mu.Lock()
		st := s.core.stats
		s.core.mu.Unlock()
		if st.nxdomain == last.nxdomain && st.badQueries == last.badQueries && st.full == last.full && st.rxDrops == last.rxDrops && st.txDrops == last.txDrops {
			continue
		}
		s.log.Info("dns: queries refused in the last minute", "nxdomain", st.nxdomain-last.nxdomain, "undecodable", st.badQueries-last.badQueries,
			"opens_while_full", st.full-last.full, "rx_queue_full", st.rxDrops-last.rxDrops, "tx_dropped", st.txDrops-last.txDrops)
		last = st
	}
}

// logBad logs an undecodable query, at most once a second.
func (s *Server) logBad(from net.Addr, err error) {
	if now := time.Now(); now.Sub(s.logged) >= time.Second {
		s.logged = now
		s.log.Debug("dns: undecodable query dropped", "from", from.String(), "err", err)
	}
}

// ReadBatch implements transport.Conn.
func (s *Server) ReadBatch(ps []transport.Packet) (int, error) {
	return transport.ReadQueued(s.core.rx, s.done, ps, nil)
}

// WriteBatch implements transport.Conn: packets to a client wait in its
// queue for its next query.
func (s *Server) WriteBatch(ps []transport.Packet) error {
	return writeBatch(s.done, ps, func(p transport.Packet, now time.Time) {
		if a, ok := p.Addr.(ClientAddr); ok {
			s.core.write(a.sid, p.B, now)
		}
	})
}

// writeBatch is WriteBatch for a conn closed by done: it hands each packet
// no longer than MaxPacket to write, and reports the first one that is
// longer (the rest still go).
func writeBatch(done chan struct{}, ps []transport.Packet, write func(transport.Packet, time.Time)) error {
	select {
	case <-done:
		return net.ErrClosed
	default:
	}
	var err error
	now := time.Now()
	for _, p := range ps {
		if len(p.B) > MaxPacket {
			if err == nil {
				err = &transport.TooBigError{Len: len(p.B), Max: MaxPacket}
			}
			continue
		}
		write(p, now)
	}
	return err
}

// MaxPacket implements transport.Conn.
func (s *Server) MaxPacket() int { return MaxPacket }

// PathMTU is MaxPacket: the tunnel cuts packets itself.
func (s *Server) PathMTU(transport.Addr) int { return MaxPacket }

// Scheme is "dns".
func (s *Server) Scheme() string { return "dns" }

// PathStats reports on one client's session.
func (s *Server) PathStats(a transport.Addr) (transport.PathStats, bool) {
	ca, ok := a.(ClientAddr)
	if !ok {
		return transport.PathStats{}, false
	}
	return s.core.pathStats(ca.sid, time.Now())
}

// Sessions is the number of clients the server keeps state for.
func (s *Server) Sessions() int {
	s.core.mu.Lock()
	defer s.core.mu.Unlock()
	return len(s.core.sessions)
}

// Close implements transport.Conn.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.udp.Close()
		s.tcp.Shutdown()
		s.tcpL.Close()
		s.wg.Wait()
	})
	return nil
}

// Client is the tunnel's client end as a transport.Conn with one remote
// Addr (Remote): it sends queries to one recursive resolver, and only to
// it.
type Client struct {
	core   *clientCore
	conn   net.Conn // plain DNS over UDP; nil with DoT or DoH
	secure *secureSender
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	// Plain DNS: the queries in flight by id, to ask again over TCP when
	// the answer comes truncated, and the TCP exchanges running.
	resolver string
	qmu      sync.Mutex
	sent     map[uint16][]byte
	tcpRuns  chan struct{}
}

// Bounds of the client's TCP retries of truncated answers.
const (
	maxSentKept = 1024
	maxTCPRuns  = 8
	tcpTimeout  = 5 * time.Second
)

// SystemResolver returns the first nameserver of /etc/resolv.conf.
func SystemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("dns: no resolver given and %w; use --resolver ADDR", err)
	}
	if len(cc.Servers) == 0 {
		return "", errors.New("dns: no nameserver in /etc/resolv.conf; use --resolver ADDR")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// ResolverAddr returns resolver as host:port, port 53 by default (plain
// DNS); a tls://HOST[:PORT] (DoT, port 853 by default) or https://URL
// (DoH) resolver is returned as it is, checked.
func ResolverAddr(resolver string) (string, error) {
	switch {
	case strings.HasPrefix(resolver, "tls://"):
		hp := strings.TrimPrefix(resolver, "tls://")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			hp = net.JoinHostPort(strings.Trim(hp, "[]"), "853")
		}
		if h, _, err := net.SplitHostPort(hp); err != nil || h == "" {
			return "", fmt.Errorf("dns: --resolver %q: use tls://HOST[:PORT]", resolver)
		}
		return "tls://" + hp, nil
	case strings.HasPrefix(resolver, "https://"):
		u, err := url.Parse(resolver)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("dns: --resolver %q: use https://HOST[:PORT]/PATH (DNS over HTTPS, RFC 8484)", resolver)
		}
		if u.Path == "" {
			u.Path = "/dns-query"
		}
		return u.String(), nil
	case strings.Contains(resolver, "://"):
		return "", fmt.Errorf("dns: --resolver %q: give HOST[:PORT] (plain DNS), tls://HOST[:PORT] (DNS over TLS) or https://URL (DNS over HTTPS)", resolver)
	}
	if _, _, err := net.SplitHostPort(resolver); err != nil {
		resolver = net.JoinHostPort(strings.Trim(resolver, "[]"), "53")
	}
	if h, _, err := net.SplitHostPort(resolver); err != nil || h == "" {
		return "", fmt.Errorf("dns: --resolver %q: give HOST[:PORT]", resolver)
	}
	return resolver, nil
}

// Dial returns a Client of the tunnel server for zone behind the recursive
// resolver at resolver: HOST[:PORT] (plain DNS over UDP), tls://HOST[:PORT]
// (DNS over TLS) or https://URL (DNS over HTTPS). It sends nothing until
// the first packet is written, and stops polling when nothing was written
// for a while.
func Dial(zone, resolver string, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	z, err := CanonicalZone(zone)
	if err != nil {
		return nil, err
	}
	if NameCapacity(z)-upHeaderLen-2*ackLen-upFragHdrLen < (MaxPacket+63)/64 {
		return nil, fmt.Errorf("dns: zone %q leaves too little room for data in a name; use a shorter zone (at most about 150 characters)", zone)
	}
	addr, err := ResolverAddr(resolver)
	if err != nil {
		return nil, err
	}
	c := &Client{done: make(chan struct{})}
	if strings.Contains(addr, "://") {
		c.secure = newSecureSender(addr, log, func(b []byte) { c.core.answer(b, time.Now()) })
		c.core = newClientCore(z, log, c.secure.send)
		c.secure.start()
	} else {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("dns: resolver %s: %w", addr, err)
		}
		c.conn, c.resolver = conn, addr
		c.sent, c.tcpRuns = make(map[uint16][]byte), make(chan struct{}, maxTCPRuns)
		c.core = newClientCore(z, log, func(b []byte) error {
			c.remember(b)
			_, err := conn.Write(b)
			return err
		})
		c.wg.Add(1)
		go c.readLoop()
	}
	c.wg.Add(1)
	go c.runLoop()
	return c, nil
}

func (c *Client) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-c.done:
				return
			case <-time.After(10 * time.Millisecond): // ICMP unreachable and the like
			}
			continue
		}
		if q := c.recall(buf[:n]); q != nil {
			c.askOverTCP(q)
			continue
		}
		c.core.answer(buf[:n], time.Now())
	}
}

// remember keeps query q, sent over UDP, by its id.
func (c *Client) remember(q []byte) {
	if len(q) < 12 {
		return
	}
	c.qmu.Lock()
	if len(c.sent) >= maxSentKept {
		clear(c.sent) // answers lost in bulk; their queries go again anyway
	}
	c.sent[uint16(q[0])<<8|uint16(q[1])] = append([]byte(nil), q...)
	c.qmu.Unlock()
}

// recall forgets the query that answer a answers, and returns it when a
// is truncated (TC): the server (or the resolver) wants it over TCP.
func (c *Client) recall(a []byte) []byte {
	if len(a) < 12 {
		return nil
	}
	id := uint16(a[0])<<8 | uint16(a[1])
	c.qmu.Lock()
	q := c.sent[id]
	delete(c.sent, id)
	c.qmu.Unlock()
	if a[2]&0x02 == 0 { // TC
		return nil
	}
	return q
}

// askOverTCP sends q to the resolver over TCP and hands the answer to the
// core; with maxTCPRuns running, q is lost (the core sends its data again).
func (c *Client) askOverTCP(q []byte) {
	select {
	case c.tcpRuns <- struct{}{}:
	default:
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.tcpRuns }()
		conn, err := net.DialTimeout("tcp", c.resolver, tcpTimeout)
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(tcpTimeout))
		dc := &dns.Conn{Conn: conn}
		if _, err := dc.Write(q); err != nil {
			return
		}
		b, err := dc.ReadMsgHeader(nil)
		if err != nil {
			return
		}
		c.core.answer(b, time.Now())
	}()
}

func (c *Client) runLoop() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := c.core.step(time.Now())
		t.Reset(max(time.Until(next), time.Millisecond))
		select {
		case <-c.done:
			return
		case <-c.core.wake:
		case <-t.C:
		}
	}
}

// Remote is the Addr of the tunnel server.
func (c *Client) Remote() transport.Addr { return c.core.addr }

// ReadBatch implements transport.Conn.
func (c *Client) ReadBatch(ps []transport.Packet) (int, error) {
	return transport.ReadQueued(c.core.rx, c.done, ps, nil)
}

// WriteBatch implements transport.Conn; packets to Addrs other than Remote
// are lost.
func (c *Client) WriteBatch(ps []transport.Packet) error {
	return writeBatch(c.done, ps, func(p transport.Packet, now time.Time) {
		if p.Addr == transport.Addr(c.core.addr) {
			c.core.write(p.B, now)
		}
	})
}

// MaxPacket implements transport.Conn.
func (c *Client) MaxPacket() int { return MaxPacket }

// PathMTU is MaxPacket: the tunnel cuts packets itself.
func (c *Client) PathMTU(transport.Addr) int { return MaxPacket }

// Scheme is "dns".
func (c *Client) Scheme() string { return "dns" }

// PathStats reports on the tunnel.
func (c *Client) PathStats(a transport.Addr) (transport.PathStats, bool) {
	if a != transport.Addr(c.core.addr) {
		return transport.PathStats{}, false
	}
	return c.core.pathStats(time.Now()), true
}

// DropCounts says, by reason, what the client dropped: answers that did
// not decode, packets that found no room or waited too long on the way up,
// and packets that found the receive queue full. cab status shows them.
func (c *Client) DropCounts() map[string]uint64 {
	c.core.mu.Lock()
	st := c.core.stats
	c.core.mu.Unlock()
	return map[string]uint64{"bad_answers": st.badAnswers, "up_dropped": st.upDrops, "rx_queue_full": st.rxDrops}
}

// Close implements transport.Conn.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.core.mu.Lock()
		c.core.closed = true
		c.core.mu.Unlock()
		close(c.done)
		if c.conn != nil {
			c.conn.Close()
		}
		if c.secure != nil {
			c.secure.close()
		}
		c.wg.Wait()
	})
	return nil
}
