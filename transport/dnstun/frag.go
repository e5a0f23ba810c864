package dnstun

import (
	"time"
)

// reasm is a packet being put together from its fragments.
type reasm struct {
	frags   [][]byte
	have    int
	mask    [4]uint64
	started time.Time
}

// reassembler puts packets together from fragments that come in any order,
// any number of times. It holds at most limit packets, each for at most
// timeout; a packet completed recently is remembered (by id, for timeout)
// so that a late copy of one of its fragments is not taken for a new
// packet.
type reassembler struct {
	limit   int
	timeout time.Duration
	m       map[uint16]*reasm
	done    map[uint16]time.Time
	dropped uint64 // packets abandoned incomplete
}

func newReassembler(limit int, timeout time.Duration) *reassembler {
	return &reassembler{limit: limit, timeout: timeout, m: make(map[uint16]*reasm), done: make(map[uint16]time.Time)}
}

// add takes fragment idx of count of packet id and returns the packet when
// it is complete. dup says the fragment was already known (its packet is
// complete or has it).
func (r *reassembler) add(id uint16, idx, count int, b []byte, now time.Time) (pkt []byte, dup bool) {
	if count <= 0 || idx >= count || count > 256 {
		return nil, false
	}
	if t, ok := r.done[id]; ok {
		if now.Sub(t) < r.timeout {
			return nil, true
		}
		delete(r.done, id)
	}
	e := r.m[id]
	if e != nil && (len(e.frags) != count || now.Sub(e.started) >= r.timeout) {
		delete(r.m, id) // stale, or a different packet under a reused id
		r.dropped++
		e = nil
	}
	if e == nil {
		if len(r.m) >= r.limit {
			r.expire(now)
			if len(r.m) >= r.limit {
				r.evictOldest()
			}
		}
		e = &reasm{frags: make([][]byte, count), started: now}
		r.m[id] = e
	}
	if e.mask[idx/64]&(1<<(idx%64)) != 0 {
		return nil, true
	}
	e.mask[idx/64] |= 1 << (idx % 64)
	e.frags[idx] = append([]byte(nil), b...)
	e.have++
	if e.have < count {
		return nil, false
	}
	n := 0
	for _, f := range e.frags {
		n += len(f)
	}
	pkt = make([]byte, 0, n)
	for _, f := range e.frags {
		pkt = append(pkt, f...)
	}
	delete(r.m, id)
	if len(r.done) >= 4*r.limit+256 {
		for k, t := range r.done {
			if now.Sub(t) >= r.timeout {
				delete(r.done, k)
			}
		}
		if len(r.done) >= 4*r.limit+256 {
			clear(r.done)
		}
	}
	r.done[id] = now
	return pkt, false
}

// expire drops packets older than the timeout.
func (r *reassembler) expire(now time.Time) {
	for id, e := range r.m {
		if now.Sub(e.started) >= r.timeout {
			delete(r.m, id)
			r.dropped++
		}
	}
	for id, t := range r.done {
		if now.Sub(t) >= r.timeout {
			delete(r.done, id)
		}
	}
}

func (r *reassembler) evictOldest() {
	var old uint16
	var t time.Time
	first := true
	for id, e := range r.m {
		if first || e.started.Before(t) {
			old, t, first = id, e.started, false
		}
	}
	if !first {
		delete(r.m, old)
		r.dropped++
	}
}

// split cuts p into pieces of at most size bytes (at least one piece).
func split(p []byte, size int) [][]byte {
	n := max(1, (len(p)+size-1)/size)
	out := make([][]byte, n)
	b := append([]byte(nil), p...)
	for i := range out {
		out[i] = b[i*size : min((i+1)*size, len(b))]
	}
	return out
}
