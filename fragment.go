package cab

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"cab/bridgeif"
	"cab/crypto"
)

// In-cable fragmentation. A frame too big for one packet on a peer's path
// is cut into fragments, and each fragment is sealed on its own as a
// TypeFragment packet, so nothing unauthenticated is ever buffered. The
// plaintext of a fragment packet is
//
//	frame id (4) | index (1) | count (1) | offset (2) | bytes of the frame
//
// all big endian. Reassembly is per peer, bounded in entries per peer and
// in total, and entries that do not complete within fragTimeout are
// dropped and counted.
const (
	fragHeaderLen   = 8
	maxFragments    = 64
	fragTimeout     = 2 * time.Second
	fragPerPeer     = 16   // frames in reassembly per peer
	fragTotal       = 1024 // frames in reassembly in the whole cable
	fragBufSize     = bridgeif.MaxFrame + segTrailer
	fragMaxChunkOff = bridgeif.MaxFrame + segTrailer
)

// reasm is one frame being reassembled.
type reasm struct {
	buf     []byte
	got     uint64 // bitmask of the fragments received
	count   int
	size    int // known once the last fragment arrived; -1 before
	started int64
}

// reassembly holds one peer's frames in reassembly.
type reassembly struct {
	mu      sync.Mutex // guards m
	m       map[uint32]*reasm
	free    []*reasm
	total   *atomic.Int64 // the cable's count of frames in reassembly
	dropped uint64        // guarded by mu
}

// fragment cuts the frame at buf[HeaderLen:HeaderLen+size] into fragments
// that fit wire, seals each for p with s and flags (each fragment carries
// FlagSegment when the frame ends with a segment id), and queues them on
// pt.
func (c *Cable) fragment(p *peer, s *session, pt *path, buf []byte, size int, wire WireMTU, flags byte, out *outBatch, sc *scratch) bool {
	chunk := int(wire.Frame()) - fragHeaderLen
	count := (size + chunk - 1) / chunk
	if chunk <= 0 || count > maxFragments {
		return false
	}
	id := p.route.fragID.Add(1)
	frame := buf[crypto.HeaderLen : crypto.HeaderLen+size]
	for i := 0; i < count; i++ {
		part := frame[i*chunk : min((i+1)*chunk, size)]
		b := sc.get(fragHeaderLen + len(part))
		h := b[crypto.HeaderLen:]
		binary.BigEndian.PutUint32(h[0:4], id)
		h[4], h[5] = byte(i), byte(count)
		binary.BigEndian.PutUint16(h[6:8], uint16(i*chunk))
		copy(h[fragHeaderLen:], part)
		out.seal(sealJob{p: p, s: s, pt: pt, typ: crypto.TypeFragment, flags: flags, buf: b, size: fragHeaderLen + len(part)})
	}
	p.route.fragmented.Add(1)
	return true
}

// reassemble takes the plaintext of one authenticated fragment from p and
// returns the whole frame once every fragment of it has arrived (valid
// until the next call for p), or nil.
func (c *Cable) reassemble(p *peer, pl []byte, now int64) []byte {
	if len(pl) <= fragHeaderLen {
		c.drop(p, dropFragment)
		return nil
	}
	id := binary.BigEndian.Uint32(pl[0:4])
	idx, count := int(pl[4]), int(pl[5])
	off := int(binary.BigEndian.Uint16(pl[6:8]))
	part := pl[fragHeaderLen:]
	if count < 2 || count > maxFragments || idx >= count || off+len(part) > fragBufSize {
		c.drop(p, dropFragment)
		return nil
	}
	r := &p.route.reasm
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[id]
	if e == nil {
		if r.fullLocked() {
			r.evictLocked(now, &c.dropper, p)
		}
		if r.fullLocked() && len(r.m) > 0 {
			// The peer's oldest frame in reassembly makes room: frames are
			// cut and sent in order, so one that fragPerPeer newer frames
			// have overtaken lost a fragment on the way. Waiting for it to
			// time out would drop every fragmented frame of the peer
			// meanwhile: a few losses on the path would stall a flow for
			// fragTimeout.
			r.evictOldestLocked(id, &c.dropper, p)
		}
		if r.fullLocked() {
			c.drop(p, dropFragment)
			return nil
		}
		if n := len(r.free); n > 0 {
			e, r.free = r.free[n-1], r.free[:n-1]
		} else {
			e = &reasm{buf: make([]byte, fragBufSize)}
		}
		e.got, e.count, e.size, e.started = 0, count, -1, now
		if r.m == nil {
			r.m = make(map[uint32]*reasm)
		}
		r.m[id] = e
		r.total.Add(1)
	}
	bit := uint64(1) << idx
	if e.count != count || e.got&bit != 0 {
		c.drop(p, dropFragment) // inconsistent or duplicate
		return nil
	}
	e.got |= bit
	copy(e.buf[off:], part)
	if idx == count-1 {
		e.size = off + len(part)
	}
	if e.got != 1<<count-1 || e.size < 0 {
		return nil
	}
	r.removeLocked(id, e)
	return e.buf[:e.size]
}

// fullLocked reports whether r, or the cable, holds as many frames in
// reassembly as it may.
func (r *reassembly) fullLocked() bool {
	return len(r.m) >= fragPerPeer || r.total.Load() >= fragTotal
}

// evictLocked drops the entries of r older than fragTimeout.
func (r *reassembly) evictLocked(now int64, d *dropper, p *peer) {
	for id, e := range r.m {
		if now-e.started > int64(fragTimeout) {
			r.removeLocked(id, e)
			d.drop(p, dropFragment)
		}
	}
}

// evictOldestLocked drops r's frame that began first, the one sent
// longest before frame id when several began at once.
func (r *reassembly) evictOldestLocked(id uint32, d *dropper, p *peer) {
	var oldest *reasm
	var oldestID uint32
	for eid, e := range r.m {
		if oldest == nil || e.started < oldest.started ||
			e.started == oldest.started && int32(eid-id) < int32(oldestID-id) {
			oldest, oldestID = e, eid
		}
	}
	if oldest != nil {
		r.removeLocked(oldestID, oldest)
		d.drop(p, dropFragment)
	}
}

func (r *reassembly) removeLocked(id uint32, e *reasm) {
	delete(r.m, id)
	r.free = append(r.free, e)
	r.total.Add(-1)
}

// expire drops p's fragments that waited too long.
func (r *reassembly) expire(now int64, d *dropper, p *peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictLocked(now, d, p)
	if len(r.m) == 0 && len(r.free) > 0 {
		r.free = nil // give the memory back when idle
	}
}
