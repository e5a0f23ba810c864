// Package transporttest provides in-memory transport.Conns for tests of the
// cable: a Network of Conns addressed by name, with optional loss,
// duplication, reordering, delay and a maximum packet size. It uses only
// channels and timers and starts no goroutines, so it works inside
// testing/synctest bubbles, and a closed Conn leaves nothing behind.
package transporttest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cab/transport"
)

// Options shape a Network's behaviour. The zero value is a lossless,
// in-order network without delay.
type Options struct {
	Loss      float64 // probability that a packet is dropped
	Duplicate float64 // probability that a packet is delivered twice
	// Reorder is the probability that a packet is held back and delivered
	// right after the next packet to the same Conn. A held packet waits
	// for that next packet: if none comes, it is lost.
	Reorder   float64
	MaxPacket int   // largest packet WriteBatch accepts; default 65535
	Queue     int   // per-conn receive queue; a full queue drops; default 1024
	Seed      int64 // seed of the random source, for repeatable runs
	// BlackHole, when set, silently loses every packet longer than this
	// (a path MTU black hole: ICMP filtered, MaxPacket unaware).
	BlackHole int
	// Delay holds every packet this long before it can be read (one-way
	// latency), in order.
	Delay time.Duration
	// QueueDelay makes the Conns report how long their packets waited to
	// be read (transport.QueueDelayer), as UDP does; without it they
	// report 0, and a cable never counts itself behind on them.
	QueueDelay bool
}

// A Network is an in-memory switchboard of Conns addressed by name. It is
// safe for concurrent use.
type Network struct {
	opts Options

	mu    sync.Mutex // guards all following fields
	rng   *rand.Rand
	conns map[Addr]*Conn
	held  map[Addr]queued // a packet held back for reordering, per destination
}

// NewNetwork returns an empty Network.
func NewNetwork(opts Options) *Network {
	if opts.MaxPacket <= 0 {
		opts.MaxPacket = 65535
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	seed := uint64(opts.Seed)
	return &Network{
		opts:  opts,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		conns: make(map[Addr]*Conn),
		held:  make(map[Addr]queued),
	}
}

// Conn makes a Conn at name, replacing any earlier Conn of that name (as a
// restarted process takes over its address). Sending to a name with no
// Conn is a silent loss.
func (n *Network) Conn(name string) *Conn {
	c := &Conn{
		net:  n,
		addr: Addr(name),
		in:   make(chan queued, n.opts.Queue),
		done: make(chan struct{}),
	}
	n.mu.Lock()
	n.conns[c.addr] = c
	delete(n.held, c.addr)
	n.mu.Unlock()
	return c
}

// NewPair returns two Conns, "a" and "b", on a new Network.
func NewPair(opts Options) (a, b *Conn) {
	n := NewNetwork(opts)
	return n.Conn("a"), n.Conn("b")
}

// Addr is the name of a Conn on a Network.
type Addr string

var _ transport.Addr = Addr("")

// String returns the name.
func (a Addr) String() string { return string(a) }

// queued is a packet on its way to a Conn.
type queued struct {
	b    []byte
	from Addr
	due  time.Time // when it may be read; zero without Options.Delay
	sent time.Time // when it was sent
}

// A Conn is one endpoint of a Network; it implements transport.Conn.
type Conn struct {
	net  *Network
	addr Addr
	in   chan queued
	done chan struct{} // closed by Close

	// The single reader's: a packet taken from in that is not due yet, and
	// how long the first packet of the last ReadBatch waited.
	pending    queued
	hasPending bool
	delay      time.Duration

	authMu sync.Mutex
	auth   map[transport.Addr]int // Authenticated calls by Addr

	closeOnce               sync.Once
	down                    atomic.Bool
	deaf                    atomic.Bool
	sent, received, dropped atomic.Uint64
}

var (
	_ transport.Conn          = (*Conn)(nil)
	_ transport.Authenticator = (*Conn)(nil)
	_ transport.QueueDelayer  = (*Conn)(nil)
)

// Authenticated implements transport.Authenticator: it records the call.
func (c *Conn) Authenticated(a transport.Addr) {
	c.authMu.Lock()
	if c.auth == nil {
		c.auth = make(map[transport.Addr]int)
	}
	c.auth[a]++
	c.authMu.Unlock()
}

// AuthenticatedCalls says how often Authenticated was called for a.
func (c *Conn) AuthenticatedCalls(a transport.Addr) int {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.auth[a]
}

// Addr returns the conn's own address.
func (c *Conn) Addr() Addr { return c.addr }

// Sent counts the packets WriteBatch accepted (not too big), including
// those the network then lost.
func (c *Conn) Sent() uint64 { return c.sent.Load() }

// Received counts the packets ReadBatch returned, duplicates included.
func (c *Conn) Received() uint64 { return c.received.Load() }

// Dropped counts the packets lost on their way to this conn (Loss,
// BlackHole, either end down, a full queue, longer than the reader's
// buffer), and the packets this conn sent while down or to a name with no
// Conn.
func (c *Conn) Dropped() uint64 { return c.dropped.Load() }

// SetDown(true) makes the conn lose everything it sends and receives, like
// a cut cable, until SetDown(false). Packets already queued for it are
// lost too when read while down.
func (c *Conn) SetDown(down bool) { c.down.Store(down) }

// SetDeaf(true) makes the conn lose everything it receives while it still
// sends, like a firewall that drops one direction, until SetDeaf(false).
func (c *Conn) SetDeaf(deaf bool) { c.deaf.Store(deaf) }

// MaxPacket returns the network's largest packet.
func (c *Conn) MaxPacket() int { return c.net.opts.MaxPacket }

func (c *Conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ReadBatch implements transport.Conn: it blocks until a packet can be
// read, then also reads the packets queued behind it, up to len(ps).
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) {
	if c.closed() {
		return 0, net.ErrClosed
	}
	if len(ps) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(ps) {
		q, ok, err := c.next(n == 0)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		if len(q.b) > cap(ps[n].B) || c.down.Load() || c.deaf.Load() {
			c.dropped.Add(1)
			continue
		}
		if n == 0 && c.net.opts.QueueDelay {
			c.delay = max(0, time.Since(q.sent.Add(c.net.opts.Delay)))
		}
		ps[n].B = append(ps[n].B[:0], q.b...)
		ps[n].Addr = q.from
		c.received.Add(1)
		n++
	}
	return n, nil
}

// QueueDelay implements transport.QueueDelayer: how long the first packet
// of the last ReadBatch waited to be read, beyond Options.Delay; 0 unless
// Options.QueueDelay.
func (c *Conn) QueueDelay() time.Duration { return c.delay }

// next returns the next packet once it is due. With wait it blocks until
// then, or until Close (net.ErrClosed); without, ok is false when no packet
// is due now.
func (c *Conn) next(wait bool) (q queued, ok bool, err error) {
	if !c.hasPending {
		if wait {
			select {
			case q = <-c.in:
			case <-c.done:
				return queued{}, false, net.ErrClosed
			}
		} else {
			select {
			case q = <-c.in:
			default:
				return queued{}, false, nil
			}
		}
		c.pending, c.hasPending = q, true
	}
	if d := time.Until(c.pending.due); d > 0 {
		if !wait {
			return queued{}, false, nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.done:
			return queued{}, false, net.ErrClosed
		}
	}
	q, c.pending, c.hasPending = c.pending, queued{}, false
	return q, true, nil
}

// WriteBatch implements transport.Conn. It copies the packets, so the
// caller keeps its buffers. A packet longer than MaxPacket gives a
// *transport.TooBigError and an Addr of another package an error; the rest
// of the batch is still sent.
func (c *Conn) WriteBatch(ps []transport.Packet) error {
	if c.closed() {
		return net.ErrClosed
	}
	var err error
	for _, p := range ps {
		if len(p.B) > c.net.opts.MaxPacket {
			if err == nil {
				err = &transport.TooBigError{Len: len(p.B), Max: c.net.opts.MaxPacket}
			}
			continue
		}
		to, ok := p.Addr.(Addr)
		if !ok {
			if err == nil {
				err = fmt.Errorf("transporttest: write to %v: a %T is not a transporttest.Addr", p.Addr, p.Addr)
			}
			continue
		}
		c.sent.Add(1)
		c.net.send(c, to, p.B)
	}
	return err
}

// send carries one packet from c to the Conn at to, or loses it.
func (n *Network) send(from *Conn, to Addr, b []byte) {
	if from.down.Load() {
		from.dropped.Add(1)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	dst := n.conns[to]
	if dst == nil {
		from.dropped.Add(1)
		return
	}
	// Draw every number for every packet, so that a run depends on the
	// seed and the packets sent, not on earlier outcomes.
	lose, dup, hold := n.rng.Float64() < n.opts.Loss, n.rng.Float64() < n.opts.Duplicate, n.rng.Float64() < n.opts.Reorder
	if lose || dst.down.Load() || dst.deaf.Load() || n.opts.BlackHole > 0 && len(b) > n.opts.BlackHole {
		dst.dropped.Add(1)
		return
	}
	q := queued{b: bytes.Clone(b), from: from.addr, sent: time.Now()}
	if n.opts.Delay > 0 {
		q.due = q.sent.Add(n.opts.Delay)
	}
	held, isHeld := n.held[to]
	if !isHeld && hold {
		n.held[to] = q
		return
	}
	dst.enqueue(q)
	if dup {
		dst.enqueue(q)
	}
	if isHeld {
		delete(n.held, to)
		dst.enqueue(held)
	}
}

// enqueue queues q for reading, or drops it when the queue is full.
func (c *Conn) enqueue(q queued) {
	select {
	case c.in <- q:
	default:
		c.dropped.Add(1)
	}
}

// Close implements transport.Conn. It detaches the conn from its network
// and makes a blocked ReadBatch return net.ErrClosed.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		if c.net.conns[c.addr] == c {
			delete(c.net.conns, c.addr)
			delete(c.net.held, c.addr)
		}
		c.net.mu.Unlock()
	})
	return nil
}
