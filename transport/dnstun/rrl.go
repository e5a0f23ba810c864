package dnstun

import (
	"net/netip"
	"time"
)

// Response-rate limiting, BIND's RRL in small: answers to strangers
// (NXDOMAIN, REFUSED, the apex, QNAME-minimised probes) are counted per
// source network with token buckets. A network
// that lately carried a query of a session the cable vouched for (a
// resolver that serves a working tunnel, whose probes come at the
// tunnel's own rate) is not limited in its answers.
const (
	rrlRate      = 20 // answers to strangers per second and source network
	rrlBurst     = 40
	rrlMaxNets   = 4096 // source networks tracked at once
	rrlIdle      = 10 * time.Second
	vouchedFor   = sessionIdle // how long a network stays vouched for
	rrlMaxVouchd = 1024
)

type rrl struct {
	nets    map[netip.Prefix]*rrlNet
	vouched map[netip.Prefix]time.Time
}

// rrlNet is one source network's bucket.
type rrlNet struct {
	answers bucket
	over    uint64 // answers refused, for the slip
	last    time.Time
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newRRL() rrl {
	return rrl{nets: make(map[netip.Prefix]*rrlNet), vouched: make(map[netip.Prefix]time.Time)}
}

func (r *rrl) net(from netip.Prefix, now time.Time) *rrlNet {
	n := r.nets[from]
	if n == nil {
		if len(r.nets) >= rrlMaxNets {
			r.prune(now)
		}
		if len(r.nets) >= rrlMaxNets {
			clear(r.nets) // a flood from everywhere: start counting again
		}
		n = &rrlNet{}
		r.nets[from] = n
	}
	n.last = now
	return n
}

// allow says whether an answer to a stranger at from may go, and when
// not, whether a truncated answer goes instead (every second one: BIND's
// slip 2). An unknown source is not limited.
func (r *rrl) allow(from netip.Prefix, now time.Time) (ok, slip bool) {
	if !from.IsValid() {
		return true, false
	}
	if t, ok := r.vouched[from]; ok && now.Sub(t) < vouchedFor {
		return true, false
	}
	n := r.net(from, now)
	if n.answers.take(now, rrlRate, rrlBurst) {
		return true, false
	}
	n.over++
	return false, n.over%2 == 1
}

// vouch records that from carried a query of a session the cable vouched
// for.
func (r *rrl) vouch(from netip.Prefix, now time.Time) {
	if !from.IsValid() {
		return
	}
	if _, ok := r.vouched[from]; !ok && len(r.vouched) >= rrlMaxVouchd {
		r.prune(now)
		if len(r.vouched) >= rrlMaxVouchd {
			return
		}
	}
	r.vouched[from] = now
}

// prune forgets networks not heard from lately.
func (r *rrl) prune(now time.Time) {
	for p, n := range r.nets {
		if now.Sub(n.last) >= rrlIdle {
			delete(r.nets, p)
		}
	}
	for p, t := range r.vouched {
		if now.Sub(t) >= vouchedFor {
			delete(r.vouched, p)
		}
	}
}
