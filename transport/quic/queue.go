package quic

import (
	"errors"
	"time"

	"cab/transport"

	"github.com/quic-go/quic-go"
)

// dropQueue is a bounded queue of packets for one connection, drained by
// one sender. put never blocks: a full queue loses the packet. A packet
// that waited longer than MaxQueueDelay by the time the sender takes it is
// dropped, so a sender stuck in SendDatagram (quic-go's own queue of 32
// is full while the congestion window is) turns a backlog into loss.
type dropQueue struct {
	ch chan queued
}

type queued struct {
	b  []byte
	at int64 // when it was queued, unix nanoseconds
}

func newDropQueue(n int) *dropQueue { return &dropQueue{ch: make(chan queued, n)} }

// bufs keeps the buffers of packets sent, for the next ones.
var bufs = transport.NewFreeList(4096, MaxPacket, 2*MaxPacket)

// put queues a copy of p, queued at now; false when the queue was full.
func (q *dropQueue) put(p []byte, now int64) bool {
	b := append(bufs.Get(len(p)), p...)
	select {
	case q.ch <- queued{b: b, at: now}:
		return true
	default:
		putBuf(b)
		return false
	}
}

func putBuf(b []byte) { bufs.Put(b) }

// len returns how many packets wait.
func (q *dropQueue) len() int { return len(q.ch) }

// drain sends queued packets with send until done or closed is closed, or
// send fails for a reason other than a datagram too large. since is when
// the connection came up: a packet queued before it is judged from then,
// unless it was queued more than pendingMax before.
func (q *dropQueue) drain(done, closed <-chan struct{}, since int64, ctr *counters, send func([]byte) error) {
	for {
		var p queued
		select {
		case p = <-q.ch:
		case <-done:
			return
		case <-closed:
			return
		}
		now := time.Now().UnixNano()
		from := max(p.at, since)
		if now-from > int64(MaxQueueDelay) || since-p.at > int64(pendingMax) {
			ctr.stale.Add(1)
			putBuf(p.b)
			continue
		}
		err := send(p.b) // copies p.b; may block while quic-go's queue is full
		putBuf(p.b)
		if err != nil {
			var tl *quic.DatagramTooLargeError
			if errors.As(err, &tl) {
				ctr.tooLarge.Add(1)
				continue
			}
			return
		}
	}
}
