package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"cab/transport"
)

// ClientConfig configures a Client. The zero value offers ALPN h3, sends
// the server's host name (when it is one) as SNI, and pings every 15 s.
type ClientConfig struct {
	ALPN       string        // TLS application protocol; "" is DefaultALPN
	ServerName string        // TLS server name (SNI); "": the host of the address, unless an IP
	KeepAlive  time.Duration // QUIC pings at most this far apart; 0 or more than 15 s: 15 s
	Logger     *slog.Logger  // dial failures and connections; nil: none
}

// Client is a transport.Conn of one QUIC server, which it dials itself:
// when there is something to send and no connection, and again, with
// backoff, when the connection ends. Its one remote end is Remote().
type Client struct {
	base
	remote string // host:port
	e      *end
	pc     net.PacketConn
	tr     *quic.Transport
	tlsc   *tls.Config
	qconf  *quic.Config
	want   chan struct{}
	ctx    context.Context
	stop   context.CancelFunc

	log     *slog.Logger
	lastErr transport.LastError
	logged  string    // the dial error last logged
	loggedT time.Time // and when
}

var (
	_ transport.Conn         = (*Client)(nil)
	_ transport.Schemer      = (*Client)(nil)
	_ transport.PathMTUer    = (*Client)(nil)
	_ transport.ReachChecker = (*Client)(nil)
	_ transport.SelfProber   = (*Client)(nil)
	_ transport.RTTer        = (*Client)(nil)
	_ transport.DropCounter  = (*Client)(nil)
)

// Dial returns a Client of the QUIC server at remote ("host:port"). It
// opens its own UDP socket; the first connection is dialled when the
// cable first sends.
func Dial(remote string, cfg ClientConfig) (*Client, error) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return nil, fmt.Errorf("quic server address %q: %w", remote, err)
	}
	if cfg.ALPN == "" {
		cfg.ALPN = DefaultALPN
	}
	if cfg.ServerName == "" && net.ParseIP(host) == nil {
		cfg.ServerName = host
	}
	ka := keepAlive
	if cfg.KeepAlive > 0 && cfg.KeepAlive < ka {
		ka = cfg.KeepAlive
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("quic client socket: %w", err)
	}
	c := &Client{base: newBase(), remote: remote, pc: pc, tr: &quic.Transport{Conn: pc},
		tlsc: clientTLS(cfg.ServerName, cfg.ALPN), qconf: quicConfig(ka), want: make(chan struct{}, 1), log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.e = &end{name: remote, queue: newDropQueue(queuePackets)}
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.dialLoop()
	return c, nil
}

// Remote is the Addr of the server: where to send, and where packets come
// from.
func (c *Client) Remote() Addr { return Addr{c.e} }

// Connected reports whether a connection is up.
func (c *Client) Connected() bool { return c.e.cur.Load() != nil }

// LastError returns why the last dial failed or the last connection
// ended, or nil.
func (c *Client) LastError() error { return c.lastErr.Get() }

func (c *Client) setErr(err error) { c.lastErr.Set(err) }

// CheckReach implements transport.ReachChecker: why the last dial failed
// or the last connection ended, or nil.
func (c *Client) CheckReach(transport.Addr) error { return c.LastError() }

// dialTimeout bounds one dial; transport.Redial paces the dials.
const dialTimeout = 10 * time.Second

func (c *Client) dialLoop() {
	defer c.wg.Done()
	var pace transport.Redial
	for {
		select {
		case <-c.want:
		case <-c.closed:
			return
		}
		if !pace.Wait(c.closed) {
			return
		}
		qc, err := c.dial()
		if err != nil && c.isClosed() {
			return // a dial that Close cut short is no failure to report
		}
		if err != nil {
			c.setErr(err)
			c.logDialError(err)
			pace.Failed()
			c.wake()
			continue
		}
		c.logged = ""
		c.log.Debug("quic connected", "server", c.remote, "addr", qc.RemoteAddr().String())
		began := time.Now()
		c.e.since.Store(began.UnixNano())
		c.e.cur.Store(qc)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			c.receive(qc, c.e)
		}()
		go func() {
			defer wg.Done()
			c.send(qc, c.e)
		}()
		select {
		case <-qc.Context().Done():
		case <-c.closed:
			qc.CloseWithError(appNoError, "")
		}
		wg.Wait()
		c.e.cur.Store(nil)
		c.setErr(fmt.Errorf("quic://%s: %w", c.remote, context.Cause(qc.Context())))
		pace.Ended(began)
		if c.e.queue.len() > 0 {
			c.wake()
		}
	}
}

// logDialError logs a failed dial: a new error at once, the same one
// again at most once a minute.
func (c *Client) logDialError(err error) {
	now := time.Now()
	if msg := err.Error(); msg != c.logged || now.Sub(c.loggedT) >= time.Minute {
		c.logged, c.loggedT = msg, now
		c.log.Warn("quic dial failed", "server", c.remote, "err", err)
	}
}

// dial makes one connection to the server, resolving its name anew.
func (c *Client) dial() (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", c.remote)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	defer cancel()
	qc, err := c.tr.Dial(ctx, ua, c.tlsc.Clone(), c.qconf)
	if err != nil {
		return nil, fmt.Errorf("quic://%s: %s%w", c.remote, unanswered(ua, err), err)
	}
	if !qc.ConnectionState().SupportsDatagrams.Remote {
		qc.CloseWithError(appNoError, "")
		return nil, fmt.Errorf("quic://%s: the server does not take datagrams", c.remote)
	}
	return qc, nil
}

// unanswered explains a dial to ua that got no answer at all (err is
// quic-go's idle or handshake timeout): nothing listens on that UDP port,
// when the kernel says so, or else what is likely. It returns "" for other
// errors.
func unanswered(ua *net.UDPAddr, err error) string {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	if !errors.As(err, &idle) && !errors.As(err, &hs) {
		return ""
	}
	if errors.Is(transport.CheckUDPReach(ua.AddrPort(), reachWait), syscall.ECONNREFUSED) {
		return fmt.Sprintf("nothing listens on UDP port %d there: the server does not carry quic on that port (a server started with --transport udp,quic carries it on port %d, or on quic://:PORT); ", ua.Port, DefaultPort)
	}
	return fmt.Sprintf("no QUIC answer: the server does not carry quic on UDP port %d, or the path blocks it; ", ua.Port)
}

// reachWait is how long unanswered waits for the kernel's ICMP error.
const reachWait = 500 * time.Millisecond

// wake asks the dial loop for a connection.
func (c *Client) wake() { transport.Wake(c.want) }

// WriteBatch implements transport.Conn: packets to Remote() are queued
// for the connection, which is dialled when there is none. A full queue
// loses them.
func (c *Client) WriteBatch(ps []transport.Packet) error {
	if c.isClosed() {
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
		if a, ok := p.Addr.(Addr); !ok || a.e != c.e {
			c.ctr.noConn.Add(1)
			continue
		}
		c.e.lastWrite.Store(now)
		if !c.e.queue.put(p.B, now) {
			c.ctr.queueFull.Add(1)
		}
	}
	if c.e.cur.Load() == nil {
		c.wake()
	}
	return err
}

// PathMTU returns the largest packet the connection carries now.
func (c *Client) PathMTU(transport.Addr) int { return pathMTU(c.e) }

// RTT returns the smoothed round-trip time of the connection.
func (c *Client) RTT(transport.Addr) time.Duration { return rtt(c.e) }

// Close ends the connection, the dial loop and the socket.
func (c *Client) Close() error {
	err := c.closeBase(func() {
		c.stop()
		if qc := c.e.cur.Load(); qc != nil {
			qc.CloseWithError(appNoError, "")
		}
	})
	if err == nil {
		c.tr.Close()
		c.pc.Close()
	}
	return err
}
