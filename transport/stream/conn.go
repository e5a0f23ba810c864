// Package stream carries cab packets over byte streams (TCP, unix stream
// sockets, the stdio of a child process such as ssh) and makes each look
// like a lossy datagram socket, a transport.Conn, to the cable.
//
// On the wire every packet is a 2-byte big-endian length and the bytes, as
// in vde_plug's stream format. A length of 0 cannot be a packet and closes
// the stream. Packets queue per stream for at most MaxQueueDelay and are
// dropped after that: the frames inside are mostly TCP, and an inner TCP
// must see loss, not seconds of delay, or the two TCPs fight (TCP-over-TCP
// meltdown). Everything queued for a stream goes in one write.
package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cab/transport"
)

// MaxPacket is the largest packet a 2-byte length frames.
const MaxPacket = 65535

// Bounds. A stream queues at most queuePackets packets for at most
// MaxQueueDelay; the conn holds at most inboxPackets received packets that
// ReadBatch has not taken (a reader beyond that waits: TCP pushes back).
const (
	MaxQueueDelay = 100 * time.Millisecond
	queuePackets  = 512
	inboxPackets  = 1024
	writeTimeout  = 10 * time.Second
)

// ErrBadLength is the error of a stream that framed a zero-length packet.
var ErrBadLength = errors.New("stream: zero-length packet")

// Addr names one stream of a Conn: an accepted connection on a server, the
// one remote end of a client.
type Addr struct {
	scheme string
	id     uint64
	remote string
}

func (a Addr) String() string {
	if a.id == 0 {
		return a.scheme + "://" + a.remote
	}
	return fmt.Sprintf("%s://%s#%d", a.scheme, a.remote, a.id)
}

// ReadPacket reads one framed packet from r into buf (grown when too
// small) and returns it. A zero length is ErrBadLength; a stream that ends
// inside a packet is io.ErrUnexpectedEOF.
func ReadPacket(r *bufio.Reader, buf []byte) ([]byte, error) {
	// The length is read into buf: a local array would escape to the
	// heap through io.ReadFull, an allocation per packet.
	if cap(buf) < 2 {
		buf = make([]byte, 0, 2048)
	}
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(buf[:2]))
	if n == 0 {
		return nil, ErrBadLength
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// AppendPacket appends p, framed, to b.
func AppendPacket(b, p []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(p))), p...)
}

// packet is a received packet, or a framed one queued to send.
type packet struct {
	b    []byte
	addr Addr
	at   int64 // when it was queued, unix nanoseconds
}

// bufs keeps the buffers of packets handled, for the next ones.
var bufs = transport.NewFreeList(4096, 2048, 1<<16)

func getBuf(n int) []byte { return bufs.Get(n) }
func putBuf(b []byte)     { bufs.Put(b) }

// stream is one open byte stream: a reader goroutine that frames packets
// into the conn's inbox, and a writer goroutine that sends its queue.
type stream struct {
	addr  Addr
	taddr transport.Addr // addr, converted once: a conversion per packet would allocate
	rw    io.ReadWriteCloser
	queue chan packet
	done  chan struct{}
	once  sync.Once
	// A server's: whether the cable vouched for the stream, and the
	// timer that closes it if not.
	authed atomic.Bool
	timer  *time.Timer
}

func (s *stream) close() {
	s.once.Do(func() {
		close(s.done)
		s.rw.Close()
	})
}

// base is what servers and clients share: the inbox, counters, Close.
type base struct {
	scheme string
	inbox  chan transport.Packet
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	drops   atomic.Uint64 // packets lost: queue full, too old, no stream
	badLens atomic.Uint64 // streams closed for a bad length
	idle    time.Duration // a stream that sends nothing for this long is closed (0: never)
}

func newBase(scheme string) base {
	return base{scheme: scheme, inbox: make(chan transport.Packet, inboxPackets), closed: make(chan struct{})}
}

// Scheme names the transport: tcp, unix or ssh.
func (b *base) Scheme() string { return b.scheme }

// MaxPacket implements transport.Conn.
func (b *base) MaxPacket() int { return MaxPacket }

// PathMTU returns MaxPacket: a stream has no path MTU, so frames never need
// cab's fragments on it.
func (b *base) PathMTU(transport.Addr) int { return MaxPacket }

// Drops counts packets lost on the way out: a full or stale queue, or no
// stream to send them on.
func (b *base) Drops() uint64 { return b.drops.Load() }

// DropCounts returns the non-zero counters by reason, for cab status.
func (b *base) DropCounts() map[string]uint64 {
	m := map[string]uint64{}
	if n := b.drops.Load(); n != 0 {
		m["tx_dropped"] = n
	}
	if n := b.badLens.Load(); n != 0 {
		m["bad_length"] = n
	}
	return m
}

func (b *base) isClosed() bool { return transport.IsClosed(b.closed) }

// ReadBatch implements transport.Conn.
func (b *base) ReadBatch(ps []transport.Packet) (int, error) {
	n, err := transport.ReadQueued(b.inbox, b.closed, ps, putBuf)
	if err != nil {
		return 0, fmt.Errorf("%s read: %w", b.scheme, err)
	}
	return n, nil
}

// run starts s's reader and writer; closing s (or the conn) ends both.
// gone runs once both have ended.
func (b *base) run(s *stream, gone func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	b.wg.Add(1)
	go func() {
		defer wg.Done()
		b.readLoop(s)
	}()
	go func() {
		defer wg.Done()
		b.writeLoop(s)
	}()
	go func() {
		defer b.wg.Done()
		select {
		case <-s.done:
		case <-b.closed:
		}
		s.close()
		wg.Wait()
		if gone != nil {
			gone()
		}
	}()
}

// deadliner is a stream whose reads can time out.
type deadliner interface{ SetReadDeadline(time.Time) error }

func (b *base) readLoop(s *stream) {
	defer s.close()
	r := bufio.NewReaderSize(s.rw, 64<<10)
	dl, _ := s.rw.(deadliner)
	for {
		if dl != nil && b.idle > 0 {
			dl.SetReadDeadline(time.Now().Add(b.idle))
		}
		buf, err := ReadPacket(r, getBuf(2048))
		if err != nil {
			if errors.Is(err, ErrBadLength) {
				b.badLens.Add(1)
			}
			return
		}
		select {
		case b.inbox <- transport.Packet{B: buf, Addr: s.taddr}:
		case <-s.done:
			return
		case <-b.closed:
			return
		}
	}
}

// deadlineWriter is a stream whose writes can time out.
type deadlineWriter interface{ SetWriteDeadline(time.Time) error }

func (b *base) writeLoop(s *stream) {
	defer s.close()
	var out net.Buffers
	var held [][]byte
	dw, _ := s.rw.(deadlineWriter)
	for {
		var p packet
		select {
		case p = <-s.queue:
		case <-s.done:
			return
		}
		out, held = out[:0], held[:0]
		oldest := time.Now().UnixNano() - int64(MaxQueueDelay)
		for more := true; more; {
			if p.at < oldest {
				b.drops.Add(1) // waited too long: the inner TCP must see loss
				putBuf(p.b)
			} else {
				out = append(out, p.b)
				held = append(held, p.b)
			}
			if len(held) >= 256 {
				break
			}
			select {
			case p = <-s.queue:
			default:
				more = false
			}
		}
		if len(out) == 0 {
			continue
		}
		if dw != nil {
			dw.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		var err error
		if bw, ok := s.rw.(buffersWriter); ok {
			err = bw.WriteBuffers(out)
		} else {
			_, err = out.WriteTo(s.rw)
		}
		for _, h := range held {
			putBuf(h)
		}
		if err != nil {
			return
		}
	}
}

// A buffersWriter writes a batch of buffers in one go: a stream that is
// no socket (a command's pipe), which net.Buffers writes one buffer at a
// time.
type buffersWriter interface {
	WriteBuffers(bufs [][]byte) error
}

// enqueue frames p onto q; a full queue loses it.
func (b *base) enqueue(q chan packet, p []byte, now int64) {
	fb := AppendPacket(getBuf(len(p)+2), p)
	select {
	case q <- packet{b: fb, at: now}:
	default:
		putBuf(fb)
		b.drops.Add(1)
	}
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
		return fmt.Errorf("%s close: %w", b.scheme, net.ErrClosed)
	}
	b.wg.Wait()
	return nil
}

func newStream(addr Addr, rw io.ReadWriteCloser) *stream {
	return &stream{addr: addr, taddr: addr, rw: rw, queue: make(chan packet, queuePackets), done: make(chan struct{})}
}

// tooBig is what WriteBatch says of a packet longer than MaxPacket.
func tooBig(n int) error { return &transport.TooBigError{Len: n, Max: MaxPacket} }
