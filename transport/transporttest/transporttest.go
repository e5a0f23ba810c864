// Package transporttest provides in-memory transport.Conns for tests: a
// Network of Conns addressed by name, with optional loss, duplication,
// reordering and a maximum packet size. It uses only channels, so it works
// inside testing/synctest bubbles.
package transporttest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cab/transport"
)

// Options shape a Network's behaviour. The zero value is a lossless,
// in-order network.
type Options struct {
	Loss      float64 // probability that a packet is dropped
	Duplicate float64 // probability that a packet is delivered twice
	Reorder   float64 // probability that a packet is held back and delivered after the next one
	MaxPacket int     // largest packet; default 65535
	Queue     int     // per-conn receive queue; a full queue drops; default 1024
	Seed      uint64  // seed of the random source
	// BlackHole, when set, silently loses every packet longer than this
	// (a path MTU black hole: ICMP filtered, MaxPacket unaware).
	BlackHole int
	// Delay holds every packet this long before delivery (one-way
	// latency), in order.
	Delay time.Duration
}

// A Network is an in-memory switchboard of Conns addressed by name.
type Network struct {
	opts Options

	mu    sync.Mutex // guards rng, conns and held
	rng   *rand.Rand
	conns map[Addr]*Conn
	held  map[Addr]*transport.Packet // a packet held back for reordering, per destination
}

// NewNetwork returns an empty Network.
func NewNetwork(opts Options) *Network {
	if opts.MaxPacket == 0 {
		opts.MaxPacket = 65535
	}
	if opts.Queue == 0 {
		opts.Queue = 1024
	}
	return &Network{
		opts:  opts,
		rng:   rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		conns: make(map[Addr]*Conn),
		held:  make(map[Addr]*transport.Packet),
	}
}

// Conn makes a Conn at name, replacing any earlier Conn of that name (as a
// restarted process would take over its address). Sending to a name with
// no Conn is a silent loss.
func (n *Network) Conn(name string) *Conn {
	c := &Conn{net: n, addr: Addr(name), in: make(chan transport.Packet, n.opts.Queue), done: make(chan struct{})}
	if n.opts.Delay > 0 {
		c.delayed = make(chan delayed, n.opts.Queue)
		go c.delayLine()
	}
	n.mu.Lock()
	n.conns[c.addr] = c
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

func (a Addr) String() string { return string(a) }

// A Conn is one endpoint of a Network.
type Conn struct {
	net     *Network
	addr    Addr
	in      chan transport.Packet
	done    chan struct{}
	delayed chan delayed // with Options.Delay

	closeOnce sync.Once
	down      atomic.Bool

	sent, received, dropped atomic.Uint64
}

var _ transport.Conn = (*Conn)(nil)

// Addr returns the conn's own address.
func (c *Conn) Addr() Addr { return c.addr }

// Sent, Received and Dropped count packets.
func (c *Conn) Sent() uint64     { return c.sent.Load() }
func (c *Conn) Received() uint64 { return c.received.Load() }
func (c *Conn) Dropped() uint64  { return c.dropped.Load() }

// SetDown makes the conn lose everything it sends and receives, like a cut
// cable, until SetDown(false).
func (c *Conn) SetDown(down bool) { c.down.Store(down) }

// MaxPacket returns the network's largest packet.
func (c *Conn) MaxPacket() int { return c.net.opts.MaxPacket }

// ReadBatch implements transport.Conn.
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	var p transport.Packet
	select {
	case p = <-c.in:
	case <-c.done:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		if len(p.B) <= cap(ps[n].B) {
			ps[n].B = ps[n].B[:cap(ps[n].B)][:copy(ps[n].B[:cap(ps[n].B)], p.B)]
			ps[n].Addr = p.Addr
			n++
			c.received.Add(1)
		} else {
			c.dropped.Add(1)
		}
		if n == len(ps) {
			return n, nil
		}
		select {
		case p = <-c.in:
		default:
			if n == 0 { // everything so far was too long: wait again
				select {
				case p = <-c.in:
					continue
				case <-c.done:
					return 0, net.ErrClosed
				}
			}
			return n, nil
		}
	}
}

// WriteBatch implements transport.Conn.
func (c *Conn) WriteBatch(ps []transport.Packet) error {
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	var tooBig error
	for _, p := range ps {
		if len(p.B) > c.net.opts.MaxPacket {
			tooBig = &transport.TooBigError{Len: len(p.B), Max: c.net.opts.MaxPacket}
			continue
		}
		c.sent.Add(1)
		if c.down.Load() || c.net.opts.BlackHole > 0 && len(p.B) > c.net.opts.BlackHole {
			continue
		}
		to, ok := p.Addr.(Addr)
		if !ok {
			return fmt.Errorf("transporttest: addr %v is not a transporttest.Addr", p.Addr)
		}
		c.net.deliver(c.addr, to, append([]byte(nil), p.B...))
	}
	return tooBig
}

func (n *Network) deliver(from, to Addr, b []byte) {
	n.mu.Lock()
	dst := n.conns[to]
	if dst == nil || dst.down.Load() || n.rng.Float64() < n.opts.Loss {
		n.mu.Unlock()
		return
	}
	copies := 1
	if n.rng.Float64() < n.opts.Duplicate {
		copies = 2
	}
	var out []transport.Packet
	p := transport.Packet{B: b, Addr: from}
	if held := n.held[to]; held != nil {
		out = append(out, p, *held) // the held packet goes after this one
		delete(n.held, to)
	} else if n.rng.Float64() < n.opts.Reorder {
		n.held[to] = &p
		copies = 0
	} else {
		out = append(out, p)
	}
	for i := 1; i < copies; i++ {
		out = append(out, p)
	}
	n.mu.Unlock()
	if n.opts.Delay > 0 {
		select {
		case dst.delayed <- delayed{due: time.Now().Add(n.opts.Delay), ps: out}:
		default:
			dst.dropped.Add(uint64(len(out)))
		}
		return
	}
	dst.enqueue(out)
}

// delayed packets wait in a conn's delay line until due.
type delayed struct {
	due time.Time
	ps  []transport.Packet
}

// delayLine delivers delayed packets in order, each when it is due.
func (c *Conn) delayLine() {
	for {
		select {
		case d := <-c.delayed:
			select {
			case <-time.After(time.Until(d.due)):
			case <-c.done:
				return
			}
			c.enqueue(d.ps)
		case <-c.done:
			return
		}
	}
}

func (c *Conn) enqueue(ps []transport.Packet) {
	for _, q := range ps {
		select {
		case c.in <- q:
		case <-c.done:
		default:
			c.dropped.Add(1) // queue full
		}
	}
}

// Close implements transport.Conn. It detaches the conn from its network.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		if c.net.conns[c.addr] == c {
			delete(c.net.conns, c.addr)
		}
		c.net.mu.Unlock()
	})
	return nil
}
