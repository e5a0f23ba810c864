package cab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
)

// outBatch collects the packets a loop sends, per conn, so each conn gets
// one WriteBatch per loop iteration. Their seals are deferred to flush,
// which may spread them over the cable's crypto workers; the packets still
// go out in the order they were queued.
type outBatch struct {
	conns []transport.Conn
	ps    [][]transport.Packet
	cb    cryptoBatch

	pool  *cryptoPool // seals at flush; nil: on the loop alone
	drops *dropper    // counts what cannot be sent
	kick  func()      // wakes the timers when a session is used up
}

// newOutBatch returns an empty outBatch of the cable's loops.
func (c *Cable) newOutBatch() outBatch {
	return outBatch{pool: c.pool, drops: &c.dropper, kick: c.kickTimers}
}

// seal queues j's frame, to be sealed and sent at flush.
func (o *outBatch) seal(j sealJob) { o.cb.seals = append(o.cb.seals, j) }

func (o *outBatch) add(pt *path, b []byte) {
	for i, conn := range o.conns {
		if conn == pt.conn {
			o.ps[i] = append(o.ps[i], transport.Packet{B: b, Addr: pt.addr})
			return
		}
	}
	o.conns = append(o.conns, pt.conn)
	o.ps = append(o.ps, []transport.Packet{{B: b, Addr: pt.addr}})
}

// flush seals what was queued and sends every conn its packets in one
// WriteBatch.
func (o *outBatch) flush() {
	if len(o.cb.seals) > 0 {
		o.cb.run(o.pool)
		for i := range o.cb.seals {
			j := &o.cb.seals[i]
			if j.err != nil { // the session is used up: a new one is due
				o.drops.drop(j.p, dropNoSession)
				o.kick()
				continue
			}
			o.add(j.pt, j.pkt)
		}
		clear(o.cb.seals)
		o.cb.seals = o.cb.seals[:0]
	}
	for i, conn := range o.conns {
		if len(o.ps[i]) == 0 {
			continue
		}
		if err := conn.WriteBatch(o.ps[i]); err != nil {
			var tb *transport.TooBigError
			if errors.As(err, &tb) {
				o.drops.drop(nil, dropTooBig)
			}
		}
		clear(o.ps[i])
		o.ps[i] = o.ps[i][:0]
	}
}

// scratch is a loop-owned arena of packet buffers for frames that go to
// more than one place (flooded copies, relays, fragments, reassembled
// frames). Each buffer is cut to the packet it will hold, so a broadcast
// to 200 peers costs 200 copies of its own size, not 200 jumbo-frame
// buffers. The loop resets it once per batch, once the batch's packets
// are out; its chunks are reused batch after batch.
type scratch struct {
	chunks [][]byte
	chunk  int // the chunk being cut
	off    int // where in it
}

// scratchChunk is the size of the arena's chunks: a few jumbo frames.
const scratchChunk = 64 << 10

// get returns a buffer for a packet of a size-byte frame (or fragment):
// room for the header, the frame, a segment id and the tag, sealed in
// place.
func (s *scratch) get(size int) []byte {
	n := crypto.HeaderLen + size + segTrailer + crypto.TagLen
	for {
		if s.chunk == len(s.chunks) {
			s.chunks = append(s.chunks, make([]byte, max(scratchChunk, n)))
		}
		if c := s.chunks[s.chunk]; s.off+n <= len(c) {
			b := c[s.off : s.off+n : s.off+n]
			s.off += n
			return b
		}
		s.chunk++
		s.off = 0
	}
}

// reset makes every buffer of the arena free again.
func (s *scratch) reset() { s.chunk, s.off = 0, 0 }

// bufSize fits the largest frame with its header and tag.
const bufSize = crypto.HeaderLen + bridgeif.MaxFrame + segTrailer + crypto.TagLen

// portReader reads a port and sends its frames on: the port loop's state.
// For a port that is a bridgeif.Poller, a conn loop that has just written
// frames to the port polls it too (Cable.poll), so that a reply the kernel
// queued during the write (an echo reply, a TCP ACK) leaves at once rather
// than after the port loop wakes up; mu makes one of them read and send at
// a time, so frames leave in the order the port gave them.
type portReader struct {
	mu     sync.Mutex
	seg    *segment
	port   bridgeif.Port
	poller bridgeif.Poller // nil: the port loop waits in ReadBatch
	owner  *peer
	bufs   [][]byte
	sizes  []int
	out    outBatch
	sc     scratch
}

// portLoop reads frames from port, of segment seg, and sends them to the
// peers they are for: through the segment's fdb, or all to owner for a
// peer's own port.
func (c *Cable) portLoop(seg *segment, port bridgeif.Port, owner *peer) error {
	r := &portReader{seg: seg, port: port, owner: owner, bufs: make([][]byte, batch), sizes: make([]int, batch), out: c.newOutBatch()}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	r.poller, _ = port.(bridgeif.Poller)
	if r.poller != nil && owner == nil {
		seg.reader.Store(r)
		defer seg.reader.CompareAndSwap(r, nil)
	}
	failures := 0
	for {
		var n int
		var err error
		if r.poller != nil {
			r.mu.Lock()
			n, err = r.poller.TryReadBatch(r.bufs, r.sizes, crypto.HeaderLen)
			if n > 0 {
				c.fromPort(r, n)
			}
			r.mu.Unlock()
			if n == 0 && err == nil {
				err = r.poller.WaitRead()
			}
		} else if n, err = port.ReadBatch(r.bufs, r.sizes, crypto.HeaderLen); err == nil {
			c.fromPort(r, n)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			failures++
			if failures > 100 {
				return fmt.Errorf("port: %w", err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if n > 0 {
			failures = 0
		}
	}
}

// poll takes, without waiting, the frames queued on the port r reads and
// sends them on, unless the port loop is at it. A conn loop calls it
// after writing frames to the port.
func (c *Cable) poll(r *portReader) {
	if !r.mu.TryLock() {
		return
	}
	if n, err := r.poller.TryReadBatch(r.bufs, r.sizes, crypto.HeaderLen); err == nil && n > 0 {
		r.seg.polled.Add(uint64(n))
		c.fromPort(r, n)
	}
	r.mu.Unlock()
}

// fromPort sends on the n frames r read, in r.bufs, and flushes r.out.
func (c *Cable) fromPort(r *portReader, n int) {
	seg, owner, out, sc := r.seg, r.owner, &r.out, &r.sc
	now := time.Now().UnixNano()
	sc.reset()
	for i := 0; i < n; i++ {
		size := r.sizes[i]
		buf := r.bufs[i]
		frame := buf[crypto.HeaderLen : crypto.HeaderLen+size]
		if size < ethHeaderLen {
			c.drop(nil, dropRunt)
			continue
		}
		dst, src := frameKeys(frame)
		if dst.isBPDU() {
			if c.cfg.DropBPDU {
				c.drop(nil, dropBPDU)
				continue
			}
			if owner == nil && bpduTopologyChange(frame) {
				c.topologyChange(seg, now)
			}
		}
		c.clampSYN(frame, seg)
		seg.fromPort.Add(1)
		if owner != nil {
			c.seal(owner, seg, buf, size, out, sc, now)
			continue
		}
		seg.fdb.learn(src, nil, now)
		if p, ok := seg.fdb.lookup(dst); ok {
			if p != nil {
				c.seal(p, seg, buf, size, out, sc, now)
			}
			continue
		}
		if c.mayFlood(seg, nil, now) {
			c.flood(seg, nil, buf, size, out, sc, now)
		}
	}
	out.flush()
}

// mayFlood reports whether a frame from `from` (nil: the cable's own port)
// may be flooded at now, and counts the drop when not: the source must be
// within its flood rate (frames a second) and, when the frame goes to more
// than one place, within its share of the cable's flood budget for the
// copies it makes (or what the other sources leave idle). A client thus
// drops a storm from its own side before sealing it, and a hub's output
// stays within its budget however many clients flood.
func (c *Cable) mayFlood(seg *segment, from *peer, now int64) bool {
	pol := &seg.local
	if from != nil {
		if pol, _ = from.in(seg); pol == nil {
			return false
		}
	}
	if rate := seg.floodRate(c); rate > 0 {
		pol.floodMu.Lock()
		ok := pol.flood.Take(now, float64(rate), float64(2*rate))
		pol.floodMu.Unlock()
		if !ok {
			c.drop(from, dropFloodLimit)
			return false
		}
	}
	if c.floodBudget == nil {
		return true
	}
	// A frame that goes to one place costs what unicast does: the budget
	// bounds what flooding multiplies.
	copies, sources := c.floodFanout(seg, from)
	if copies > 1 && !c.floodBudget.Take(&pol.share, sources, float64(copies), now) {
		c.drop(from, dropFloodBudget)
		return false
	}
	return true
}

// floodFanout returns how many copies a frame from `from` (nil: the
// cable's own port) makes when flooded — one per peer with a session,
// and one for the cable's port when the frame came from a peer — and how
// many sources share the flood budget: the peers with a session and the
// cable's port.
func (c *Cable) floodFanout(seg *segment, from *peer) (copies, sources int) {
	isolate := seg.isolate(c)
	for _, p := range c.peerList() {
		if _, in := p.in(seg); !in || p.hs.cur.Load() == nil {
			continue
		}
		sources++
		if p != from && (from == nil || !isolate) {
			copies++
		}
	}
	if seg.port != nil {
		sources++
		if from != nil {
			copies++
		}
	}
	return copies, sources
}

// flood sends the frame at buf[HeaderLen:HeaderLen+size] to every peer in
// seg with a session except from. The last peer seals buf in place; the
// others get copies.
func (c *Cable) flood(seg *segment, from *peer, buf []byte, size int, out *outBatch, sc *scratch, now int64) {
	var last *peer
	for _, p := range c.peerList() {
		if p == from || p.hs.cur.Load() == nil {
			continue
		}
		if _, in := p.in(seg); !in {
			continue
		}
		if last != nil {
			b := sc.get(size)
			copy(b[crypto.HeaderLen:], buf[crypto.HeaderLen:crypto.HeaderLen+size])
			c.seal(last, seg, b, size, out, sc, now)
		}
		last = p
	}
	if last != nil {
		c.seal(last, seg, buf, size, out, sc, now)
	}
}

// seal seals the frame at buf[HeaderLen:HeaderLen+size], of segment seg,
// for p in place and queues the packet on p's path. A named segment's id
// is put after the frame, inside what is sealed.
func (c *Cable) seal(p *peer, seg *segment, buf []byte, size int, out *outBatch, sc *scratch, now int64) {
	s := p.hs.cur.Load()
	pt := p.route.path.Load()
	if s == nil || pt == nil || now-s.Created().UnixNano() >= int64(crypto.RejectAfterTime) {
		c.drop(p, dropNoSession)
		if p.dial != nil {
			c.kickTimers()
		}
		return
	}
	flags, plain := p.flags(now), size
	if seg.id != 0 {
		if len(buf) < crypto.HeaderLen+size+segTrailer+crypto.TagLen {
			b := sc.get(size)
			copy(b[crypto.HeaderLen:], buf[crypto.HeaderLen:crypto.HeaderLen+size])
			buf = b
		}
		binary.BigEndian.PutUint32(buf[crypto.HeaderLen+size:], seg.id)
		flags |= crypto.FlagSegment
		plain += segTrailer
	}
	if wire := WireMTU(p.route.wireMTU.Load()); FrameMTU(plain).Wire() > wire {
		if !c.fragment(p, s, pt, buf, plain, wire, flags, out, sc) {
			c.drop(p, dropTooBig)
			return
		}
	} else {
		out.seal(sealJob{p: p, s: s, pt: pt, typ: crypto.TypeData, flags: flags, buf: buf, size: plain})
	}
	p.stats.txFrames.Add(1)
	p.stats.txBytes.Add(uint64(size))
	p.noteSent(now)
}

// sendKeepalive sends an empty data packet to p.
func (c *Cable) sendKeepalive(p *peer, now int64) { c.sendKeepaliveFlags(p, now, 0) }

// sendKeepaliveFlags sends an empty data packet to p with flags (FlagAsk)
// in addition to its usual ones.
func (c *Cable) sendKeepaliveFlags(p *peer, now int64, flags byte) {
	s, pt := p.hs.cur.Load(), p.route.path.Load()
	if s == nil || pt == nil {
		return
	}
	var buf [crypto.Overhead]byte
	pkt, err := s.SealFlags(crypto.TypeData, p.flags(now)|flags, buf[:], 0)
	if err != nil {
		return
	}
	p.noteSent(now)
	pt.conn.WriteBatch([]transport.Packet{{B: pkt, Addr: pt.addr}})
}

// answerAsk queues on out a keepalive that answers p's ask (FlagAsk) at once,
// at most one per answerGap whatever p sends. An answer is not a question:
// it leaves p's unanswered time alone.
func (c *Cable) answerAsk(p *peer, out *outBatch, sc *scratch, now int64) {
	last := p.live.lastAnswer.Load()
	if now-last < int64(answerGap) || !p.live.lastAnswer.CompareAndSwap(last, now) {
		return
	}
	s, pt := p.hs.cur.Load(), p.route.path.Load()
	if s == nil || pt == nil {
		return
	}
	out.seal(sealJob{p: p, s: s, pt: pt, typ: crypto.TypeData, flags: p.flags(now), buf: sc.get(0), size: 0})
	p.live.lastSent.Store(now)
}
