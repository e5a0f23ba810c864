// Package bridgeiftest provides in-memory bridgeif.Ports for tests. They use
// only channels, so they work inside testing/synctest bubbles.
package bridgeiftest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"cab/bridgeif"
)

// Port is an in-memory Port: frames the test Injects come out of ReadBatch;
// frames written with WriteBatch come out of Frames.
type Port struct {
	in   chan []byte
	out  chan []byte
	peer *Port // NewPair: writes go to the peer's in
	done chan struct{}

	closeOnce sync.Once
	dropped   atomic.Uint64
}

var _ bridgeif.Port = (*Port)(nil)

// NewPort returns a Port whose queues hold queue frames each.
func NewPort(queue int) *Port {
	return &Port{in: make(chan []byte, queue), out: make(chan []byte, queue), done: make(chan struct{})}
}

// NewPair returns two Ports joined like the ends of a cable: what one
// writes, the other reads.
func NewPair(queue int) (a, b *Port) {
	a, b = NewPort(queue), NewPort(queue)
	a.peer, b.peer = b, a
	return a, b
}

// ErrQueueFull is returned by Inject when ReadBatch has not kept up.
var ErrQueueFull = errors.New("bridgeiftest: queue full")

// Inject queues a copy of frame for ReadBatch. It does not block: a full
// queue returns ErrQueueFull.
func (p *Port) Inject(frame []byte) error {
	select {
	case <-p.done:
		return net.ErrClosed
	default:
	}
	select {
	case p.in <- append([]byte(nil), frame...):
		return nil
	default:
		return ErrQueueFull
	}
}

// Frames returns the frames written with WriteBatch (copies). When nobody
// reads them and the channel is full, further frames are dropped and
// counted.
func (p *Port) Frames() <-chan []byte { return p.out }

// Dropped counts frames dropped because Frames was full.
func (p *Port) Dropped() uint64 { return p.dropped.Load() }

// ReadBatch implements bridgeif.Port.
func (p *Port) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) {
		var f []byte
		if n == 0 {
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

// WriteBatch implements bridgeif.Port.
func (p *Port) WriteBatch(bufs [][]byte, offset int) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	for _, b := range bufs {
		f := append([]byte(nil), b[offset:]...)
		dst := p.out
		if p.peer != nil {
			dst = p.peer.in
		}
		select {
		case dst <- f:
		default:
			p.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

// Close implements bridgeif.Port.
func (p *Port) Close() error {
	p.closeOnce.Do(func() { close(p.done) })
	return nil
}
