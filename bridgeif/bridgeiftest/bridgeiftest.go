// Package bridgeiftest provides in-memory bridgeif.Ports for tests. They use
// only channels, so they work inside testing/synctest bubbles, and Close
// ends every blocked call.
package bridgeiftest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"cab/bridgeif"
)

// Port is an in-memory Port: frames Injected by the test come out of
// ReadBatch; frames written with WriteBatch come out of Frames, or, for the
// ends of a NewPair, out of the other end's ReadBatch.
//
// Frames of any length are passed, except that WriteBatch drops a frame
// longer than bridgeif.MaxFrame and ReadBatch one longer than its buffer;
// Dropped counts those and the frames lost to full queues. A Port is safe
// for concurrent use, within the bridgeif.Port contract.
type Port struct {
	in   chan []byte // what ReadBatch returns
	out  chan []byte // Frames
	peer *Port       // NewPair: WriteBatch feeds peer.in instead of out
	done chan struct{}

	closeOnce sync.Once
	dropped   atomic.Uint64

	carrierMu sync.Mutex
	carrier   []bool // every SetCarrier, in order
	carrierCh chan bool
}

var (
	_ bridgeif.Port    = (*Port)(nil)
	_ bridgeif.Carrier = (*Port)(nil)
)

// NewPort returns a Port whose queues, the one ReadBatch takes from and
// Frames, each hold queue frames (at least 1).
func NewPort(queue int) *Port {
	queue = max(queue, 1)
	return &Port{in: make(chan []byte, queue), out: make(chan []byte, queue), done: make(chan struct{}),
		carrierCh: make(chan bool, 64)}
}

// NewPair returns two Ports joined like the two ends of a cable: what one
// WriteBatch-es, the other ReadBatch-es. A full queue drops the frame and
// counts it on the writing end, as does a closed far end. The ends of a pair
// put nothing in their Frames.
func NewPair(queue int) (a, b *Port) {
	a, b = NewPort(queue), NewPort(queue)
	a.peer, b.peer = b, a
	return a, b
}

// ErrQueueFull is returned by Inject when ReadBatch has not kept up.
var ErrQueueFull = errors.New("bridgeiftest: queue full")

func (p *Port) isClosed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Inject queues a copy of frame for ReadBatch. It never blocks: when the
// queue is full it returns ErrQueueFull, and after Close net.ErrClosed.
func (p *Port) Inject(frame []byte) error {
	if p.isClosed() {
		return net.ErrClosed
	}
	select {
	case p.in <- append([]byte(nil), frame...):
		return nil
	default:
		return ErrQueueFull
	}
}

// Frames returns the frames written with WriteBatch, as copies. When the
// channel is full, further frames are dropped and counted. It is never
// closed; frames written before Close stay in it.
func (p *Port) Frames() <-chan []byte { return p.out }

// Dropped counts the frames dropped: longer than a ReadBatch buffer or than
// bridgeif.MaxFrame, or lost to a full queue or a closed far end.
func (p *Port) Dropped() uint64 { return p.dropped.Load() }

// ReadBatch implements bridgeif.Port: it waits for one frame, then takes
// those already queued, up to len(bufs).
func (p *Port) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	limit := min(len(bufs), len(sizes))
	n := 0
	for n < limit {
		var f []byte
		if n == 0 {
			if p.isClosed() { // after a dropped frame
				return 0, net.ErrClosed
			}
			select {
			case f = <-p.in:
			case <-p.done:
				return 0, net.ErrClosed
			}
		} else {
			select {
			case f = <-p.in:
			default:
				return n, nil
			}
		}
		if len(f) > len(bufs[n])-offset {
			p.dropped.Add(1)
			continue
		}
		sizes[n] = copy(bufs[n][offset:], f)
		n++
	}
	return n, nil
}

// WriteBatch implements bridgeif.Port: it never blocks, and counts what it
// drops.
func (p *Port) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	dst := p.out
	if p.peer != nil {
		if p.peer.isClosed() {
			p.dropped.Add(uint64(len(bufs)))
			return len(bufs), nil
		}
		dst = p.peer.in
	}
	for _, b := range bufs {
		if offset > len(b) || len(b)-offset > bridgeif.MaxFrame {
			p.dropped.Add(1)
			continue
		}
		select {
		case dst <- append([]byte(nil), b[offset:]...):
		default:
			p.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

// SetCarrier implements bridgeif.Carrier: it records the call (Carrier,
// CarrierChanges). After Close it returns net.ErrClosed. To test a port
// without a carrier, hide the method: struct{ bridgeif.Port }{p}.
func (p *Port) SetCarrier(up bool) error {
	if p.isClosed() {
		return net.ErrClosed
	}
	p.carrierMu.Lock()
	p.carrier = append(p.carrier, up)
	p.carrierMu.Unlock()
	select {
	case p.carrierCh <- up:
	default: // the test does not read them; Carrier still has them all
	}
	return nil
}

// Carrier returns the values of every SetCarrier call so far, in order.
func (p *Port) Carrier() []bool {
	p.carrierMu.Lock()
	defer p.carrierMu.Unlock()
	return append([]bool(nil), p.carrier...)
}

// CarrierChanges returns a channel of the values of the SetCarrier calls,
// in order; it holds the first 64 that no one has read.
func (p *Port) CarrierChanges() <-chan bool { return p.carrierCh }

// Close implements bridgeif.Port. A blocked ReadBatch returns net.ErrClosed,
// as do later calls. Close always returns nil.
func (p *Port) Close() error {
	p.closeOnce.Do(func() { close(p.done) })
	return nil
}
