// Package quic carries cab packets in QUIC DATAGRAM frames (RFC 9221) with
// quic-go, one packet per datagram, so that the cable crosses networks
// that pass only HTTPS: UDP/443 that looks like HTTP/3 (ALPN h3 by
// default). cab's own Noise session runs inside, as on every transport:
// the TLS certificate proves nothing to cab, and the server makes its own
// unless one is configured. Nothing is ever sent as 0-RTT data, which an
// attacker could replay.
//
// A packet waits in a bounded queue per connection for at most
// MaxQueueDelay; a sender goroutine feeds quic-go's SendDatagram, which
// blocks when its own queue is full, so WriteBatch never blocks the cable.
// PathMTU reports the largest datagram that fits a QUIC packet now (about
// 1240 bytes before quic-go's path MTU discovery, about 1400 after),
// and the cable cuts larger frames with its own fragmentation.
package quic

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"cab/transport"
)

// Scheme is the URL scheme of the transport.
const Scheme = "quic"

// DefaultALPN is the TLS application protocol both ends offer by default,
// HTTP/3's, so that the handshake looks like HTTP/3 on the wire.
const DefaultALPN = "h3"

// DefaultPort is the UDP port of a server given as plain "quic": HTTPS's.
const DefaultPort = 443

// Sizes and bounds.
const (
	// MaxPacket is the largest packet WriteBatch accepts: what a QUIC
	// packet of the largest size quic-go sends (1452 bytes of UDP
	// payload) could ever carry. Whether a packet fits now is PathMTU.
	MaxPacket = 1452
	// DefaultPathMTU is what PathMTU says with no connection: the
	// datagram payload of a connection that just finished its handshake
	// with 1280-byte packets.
	DefaultPathMTU = 1243
	// MaxQueueDelay is how long a packet may wait to be sent; an older
	// one is dropped and counted (an inner TCP must see loss, not delay).
	MaxQueueDelay = 100 * time.Millisecond
	queuePackets  = 256
	inboxPackets  = 1024
	// pendingMax is how long before a client's connection came up a
	// packet may have been queued and still be sent on it.
	pendingMax = time.Second
	// appNoError is the application error code of every close: HTTP/3's
	// H3_NO_ERROR.
	appNoError quic.ApplicationErrorCode = 0x100
)

// Idle timeouts and keepalives: QUIC closes a connection that hears
// nothing for idleTimeout; a client pings every keepAlive (at most; the
// cable's keepalive interval when shorter) to keep NAT mappings open.
const (
	idleTimeout      = 45 * time.Second
	keepAlive        = 15 * time.Second
	handshakeTimeout = 5 * time.Second
)

// Addr names one QUIC connection of a server, or the one server of a
// client (the same Addr across the client's connections). String shows
// the address the connection uses now, which changes when the client's
// NAT mapping does.
type Addr struct{ e *end }

func (a Addr) String() string {
	if a.e == nil {
		return Scheme + "://?"
	}
	if c := a.e.cur.Load(); c != nil {
		return Scheme + "://" + c.RemoteAddr().String()
	}
	return Scheme + "://" + a.e.name
}

// end is the far end of an Addr: its connection (nil between a client's
// connections) and its queue of packets to send.
type end struct {
	name      string
	cur       atomic.Pointer[quic.Conn]
	since     atomic.Int64 // when cur came up, unix nanoseconds
	lastWrite atomic.Int64 // when the cable last queued a packet, unix nanoseconds; 0: never
	authed    atomic.Bool  // a server's: the cable vouched for the connection
	queue     *dropQueue
	srv       *Server // the server that accepted it; nil for a client
}

// Stats counts what a Conn dropped or refused.
type Stats struct {
	QueueFull uint64 // packets lost to a full queue
	Stale     uint64 // packets that waited longer than MaxQueueDelay
	TooLarge  uint64 // packets longer than the connection's datagram limit
	NoConn    uint64 // packets for an Addr with no connection
	BadRx     uint64 // received datagrams that cannot be a packet (empty, too long)
	Unused    uint64 // connections closed because the cable never vouched for them
	Refused   uint64 // connections refused over the server's limit, or without datagrams
	RefusedIP uint64 // connections refused over the limit of one IP address
}

// counters are the Stats, updated atomically.
type counters struct {
	queueFull, stale, tooLarge, noConn, badRx, unused, refused, refusedIP atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{QueueFull: c.queueFull.Load(), Stale: c.stale.Load(), TooLarge: c.tooLarge.Load(),
		NoConn: c.noConn.Load(), BadRx: c.badRx.Load(), Unused: c.unused.Load(), Refused: c.refused.Load(), RefusedIP: c.refusedIP.Load()}
}

// packet is a received packet and where it came from.
type packet struct {
	b    []byte
	addr Addr
}

// base is what the server and the client share: the inbox, counters and
// closing.
type base struct {
	inbox  chan transport.Packet
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	ctr    counters
}

func newBase() base {
	return base{inbox: make(chan transport.Packet, inboxPackets), closed: make(chan struct{})}
}

// Scheme returns "quic".
func (b *base) Scheme() string { return Scheme }

// MaxPacket implements transport.Conn.
func (b *base) MaxPacket() int { return MaxPacket }

// ProbesPathMTU reports that PathMTU is confirmed by QUIC's own path MTU
// discovery, which raises the datagram limit only for packet sizes the
// peer acknowledged.
func (b *base) ProbesPathMTU() bool { return true }

// Stats returns the counters.
func (b *base) Stats() Stats { return b.ctr.stats() }

// DropCounts returns the non-zero counters by reason, for cab status.
func (b *base) DropCounts() map[string]uint64 {
	s := b.ctr.stats()
	m := map[string]uint64{}
	for k, v := range map[string]uint64{"queue_full": s.QueueFull, "stale": s.Stale, "too_large": s.TooLarge,
		"no_conn": s.NoConn, "bad_rx": s.BadRx, "unused_conns": s.Unused, "refused_conns": s.Refused, "refused_per_ip": s.RefusedIP} {
		if v != 0 {
			m[k] = v
		}
	}
	return m
}

// Drops counts packets lost on the way out.
func (b *base) Drops() uint64 {
	s := b.ctr.stats()
	return s.QueueFull + s.Stale + s.TooLarge + s.NoConn
}

func (b *base) isClosed() bool { return transport.IsClosed(b.closed) }

// ReadBatch implements transport.Conn.
func (b *base) ReadBatch(ps []transport.Packet) (int, error) {
	n, err := transport.ReadQueued(b.inbox, b.closed, ps, nil)
	if err != nil {
		return 0, fmt.Errorf("quic read: %w", err)
	}
	return n, nil
}

// closeBase closes the conn once and waits for its goroutines.
func (b *base) closeBase(extra func()) error {
	first := false
	b.once.Do(func() {
		first = true
		close(b.closed)
		if extra != nil {
			extra()
		}
	})
	if !first {
		return fmt.Errorf("quic close: %w", net.ErrClosed)
	}
	b.wg.Wait()
	return nil
}

// receive moves e's datagrams from qc into the inbox until qc ends.
func (b *base) receive(qc *quic.Conn, e *end) {
	ctx := qc.Context()
	for {
		d, err := qc.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		if len(d) == 0 || len(d) > MaxPacket {
			b.ctr.badRx.Add(1)
			continue
		}
		select {
		case b.inbox <- transport.Packet{B: d, Addr: Addr{e}}:
		case <-ctx.Done():
			return
		case <-b.closed:
			return
		}
	}
}

// send feeds e's queue into qc until qc ends.
func (b *base) send(qc *quic.Conn, e *end) {
	since := e.since.Load()
	e.queue.drain(qc.Context().Done(), b.closed, since, &b.ctr, qc.SendDatagram)
}

// probe is longer than any datagram can be: SendDatagram refuses it at
// once and says the limit.
var probe = make([]byte, 1<<16)

// maxDatagram returns the largest datagram qc can send now.
func maxDatagram(qc *quic.Conn) int {
	var tl *quic.DatagramTooLargeError
	if err := qc.SendDatagram(probe); errors.As(err, &tl) {
		return int(min(tl.MaxDatagramPayloadSize, MaxPacket))
	}
	return 0
}

// pathMTU is PathMTU for e.
func pathMTU(e *end) int {
	if e == nil {
		return 0
	}
	if qc := e.cur.Load(); qc != nil {
		if m := maxDatagram(qc); m > 0 {
			return m
		}
	}
	return DefaultPathMTU
}

// rtt is RTT for e.
func rtt(e *end) time.Duration {
	if e == nil {
		return 0
	}
	if qc := e.cur.Load(); qc != nil {
		return qc.ConnectionStats().SmoothedRTT
	}
	return 0
}

// quicConfig is the QUIC configuration of both ends: datagrams, no
// streams from the peer, no 0-RTT, cab's timeouts.
func quicConfig(keepalive time.Duration) *quic.Config {
	return &quic.Config{
		EnableDatagrams:       true,
		MaxIdleTimeout:        idleTimeout,
		HandshakeIdleTimeout:  handshakeTimeout,
		KeepAlivePeriod:       keepalive,
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
		Allow0RTT:             false,
	}
}
