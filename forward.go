package cab

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// macKey is what the forwarding database is keyed by: a MAC address and the
// VLAN it was seen on (0 for untagged frames), so the same MAC on two VLANs
// is two entries.
type macKey struct {
	mac  [6]byte
	vlan uint16
}

// Ethernet constants.
const (
	ethHeaderLen  = 14
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
)

// frameKeys returns the destination and source keys of a frame of at least
// ethHeaderLen bytes. The VLAN is the outermost 802.1Q or 802.1ad tag's.
func frameKeys(frame []byte) (dst, src macKey) {
	copy(dst.mac[:], frame[0:6])
	copy(src.mac[:], frame[6:12])
	if len(frame) >= ethHeaderLen+4 {
		switch binary.BigEndian.Uint16(frame[12:14]) {
		case etherTypeVLAN, etherTypeQinQ:
			v := binary.BigEndian.Uint16(frame[14:16]) & 0x0fff
			dst.vlan, src.vlan = v, v
		}
	}
	return dst, src
}

// isGroup reports whether a MAC is broadcast or multicast.
func (k macKey) isGroup() bool { return k.mac[0]&1 != 0 }

type fdbEntry struct {
	peer *peer        // nil: the MAC lives behind the local port
	seen atomic.Int64 // unix nanoseconds of the last frame from this MAC
}

// fdb is a learning switch's forwarding database. Lookups and refreshing a
// known entry take no lock at all (a sync.Map read and an atomic store);
// only adding, moving and removing entries take the mutex.
type fdb struct {
	maxPerPeer int
	// sticky refuses to move a MAC from where it was learned until its
	// entry ages out or its peer goes down, so that in isolate mode no
	// client can claim another's (or the local side's) MAC. The local side
	// always wins: its frames take a MAC back from a client (counted by
	// onReclaim against that client), and its entries age out only after
	// twice the aging time, so a client cannot claim a local MAC that was
	// in use within the aging time.
	sticky    bool
	onReclaim func(from *peer)

	m sync.Map // macKey → *fdbEntry

	mu   sync.Mutex // serialises writes of m, n and macs
	n    atomic.Int64
	macs map[*peer]int // MACs learned behind each peer
}

// Forwarding defaults.
const (
	defaultFDBMaxAge     = 300 * time.Second
	defaultFDBMaxPerPeer = 1024
)

func newFDB(maxPerPeer int, sticky bool) *fdb {
	return &fdb{maxPerPeer: maxPerPeer, sticky: sticky, onReclaim: func(*peer) {}, macs: map[*peer]int{}}
}

// isBPDU reports whether a frame is for the IEEE 802.1D bridge group
// address, 01:80:c2:00:00:00, that spanning-tree BPDUs go to.
func (k macKey) isBPDU() bool {
	return k.mac == [6]byte{0x01, 0x80, 0xc2, 0, 0, 0}
}

// learnResult says what learn did.
type learnResult int

const (
	learned  learnResult = iota // the entry is (now) where the frame came from
	overCap                     // the peer has its maximum of MACs
	conflict                    // sticky: the MAC lives elsewhere
)

// learn records that src was seen behind p (nil: the local port).
func (f *fdb) learn(src macKey, p *peer, now int64) learnResult {
	if src.isGroup() {
		return learned
	}
	e := f.get(src)
	if e != nil && e.peer == p {
		e.seen.Store(now)
		return learned
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e = f.get(src)
	if e != nil && e.peer == p {
		e.seen.Store(now)
		return learned
	}
	if e != nil && f.sticky && p != nil {
		return conflict
	}
	if e != nil && f.sticky {
		f.onReclaim(e.peer) // the local side takes its MAC back
	}
	if p != nil && f.macs[p] >= f.maxPerPeer {
		return overCap
	}
	if e != nil {
		f.removeLocked(src, e)
	}
	e = &fdbEntry{peer: p}
	e.seen.Store(now)
	f.m.Store(src, e)
	f.n.Add(1)
	if p != nil {
		f.macs[p]++
	}
	return learned
}

// lookup returns where dst lives: ok is false for a MAC that is not known
// (or a group address), which the caller floods.
func (f *fdb) lookup(dst macKey) (p *peer, ok bool) {
	if dst.isGroup() {
		return nil, false
	}
	e := f.get(dst)
	if e == nil {
		return nil, false
	}
	return e.peer, true
}

func (f *fdb) get(k macKey) *fdbEntry {
	v, ok := f.m.Load(k)
	if !ok {
		return nil
	}
	return v.(*fdbEntry)
}

// each calls fn for every entry; fn must not change the fdb.
func (f *fdb) each(fn func(k macKey, e *fdbEntry)) {
	f.m.Range(func(k, v any) bool {
		fn(k.(macKey), v.(*fdbEntry))
		return true
	})
}

// age forgets entries not seen since before cutoff; a sticky fdb keeps
// the local side's for as long again (maxAge: the aging time).
func (f *fdb) age(cutoff int64, maxAge time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.each(func(k macKey, e *fdbEntry) {
		c := cutoff
		if f.sticky && e.peer == nil {
			c -= int64(maxAge)
		}
		if e.seen.Load() < c {
			f.removeLocked(k, e)
		}
	})
}

// flush removes every entry and returns how many there were.
func (f *fdb) flush() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	f.each(func(k macKey, e *fdbEntry) {
		f.removeLocked(k, e)
		n++
	})
	return n
}

// forget removes every entry learned behind p.
func (f *fdb) forget(p *peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.each(func(k macKey, e *fdbEntry) {
		if e.peer == p {
			f.removeLocked(k, e)
		}
	})
}

func (f *fdb) removeLocked(k macKey, e *fdbEntry) {
	f.m.Delete(k)
	f.n.Add(-1)
	if e.peer != nil {
		if f.macs[e.peer]--; f.macs[e.peer] <= 0 {
			delete(f.macs, e.peer)
		}
	}
}

// macsOf returns how many MACs were learned behind p.
func (f *fdb) macsOf(p *peer) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.macs[p]
}

// len returns the number of entries.
func (f *fdb) len() int { return int(f.n.Load()) }
