// Package ratelimit has the token buckets that bound what a sender may make
// a cable do: handshakes per source and in total, flooded frames per peer,
// and the copies of flooded frames that all of them share (Pool). It
// imports nothing of cab's; the caller passes the time, so tests need no
// clock.
package ratelimit

import (
	"sync"
	"time"
)

// A Bucket is a token bucket. The zero value is a bucket that starts full
// at its first Take. It is not safe for concurrent use.
type Bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last Take; 0 before the first
}

// Take refills b for the time since the last Take, at rate tokens a second
// up to burst, and takes one token if there is one.
func (b *Bucket) Take(now int64, rate, burst float64) bool { return b.TakeN(now, rate, burst, 1) }

// TakeN is Take for n tokens: all of them, or none.
func (b *Bucket) TakeN(now int64, rate, burst, n float64) bool {
	b.refill(now, rate, burst)
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// refill adds the tokens earned since the last refill.
func (b *Bucket) refill(now int64, rate, burst float64) {
	if b.last == 0 {
		b.tokens = burst
	} else if now > b.last {
		b.tokens = min(burst, b.tokens+float64(now-b.last)/float64(time.Second)*rate)
	}
	b.last = max(b.last, now)
}

// A Pool is a budget of events a second that many sources share: the
// copies a hub makes of flooded frames, say. Each source has a Bucket of
// its own, refilled at its fair share (the pool's rate divided among the
// sources), and every event is also taken from the pool, so that all of
// them together never exceed its rate. A source that has used up its share
// may go on only while the pool is more than half full: what is idle is
// used, and a source over its share never spends what the others' shares
// need. A Pool is safe for concurrent use; the sources' Buckets are
// touched only under its lock.
type Pool struct {
	rate, burst float64
	mu          sync.Mutex // guards pool and the sources' Buckets
	pool        Bucket
}

// NewPool returns a Pool of rate events a second, burst at most at once.
func NewPool(rate, burst float64) *Pool { return &Pool{rate: rate, burst: burst} }

// Take takes n events at now for the source whose Bucket is own, one of
// sources: from its share when it has n left, else from what the pool has
// spare. It reports whether the events may happen.
func (p *Pool) Take(own *Bucket, sources int, n float64, now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A share may be saved up only to an eighth of the pool's burst among
	// all the sources (or one take), so that the shares together never
	// empty the half of the pool that borrowing leaves.
	share := p.rate / float64(max(sources, 1))
	ownBurst := max(n, p.burst/8/float64(max(sources, 1)))
	p.pool.refill(now, p.rate, p.burst)
	if p.pool.tokens < n {
		own.refill(now, share, ownBurst)
		return false
	}
	if own.TakeN(now, share, ownBurst, n) || p.pool.tokens-n >= p.burst/2 {
		p.pool.tokens -= n
		return true
	}
	return false
}

// Limits are the rates of a Limiter, in events a second, and how many keys
// it tracks at most.
type Limits struct {
	PerKey, PerKeyBurst float64
	Global, GlobalBurst float64
	MaxKeys             int
}

// A Limiter limits events per key and in total. It is safe for concurrent
// use.
type Limiter[K comparable] struct {
	lim     Limits
	mu      sync.Mutex // guards the following fields
	buckets map[K]*Bucket
	global  Bucket
}

// New returns a Limiter with the limits l.
func New[K comparable](l Limits) *Limiter[K] {
	return &Limiter[K]{lim: l, buckets: make(map[K]*Bucket)}
}

// Allow reports whether one more event from k may happen at now. The key's
// own budget is checked first, so that a key over its share never spends
// the others' global budget. With MaxKeys keys tracked, a new key is
// refused until Prune makes room.
func (r *Limiter[K]) Allow(k K, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[k]
	if b == nil {
		if len(r.buckets) >= r.lim.MaxKeys {
			return false
		}
		b = &Bucket{}
		r.buckets[k] = b
	}
	return b.Take(now, r.lim.PerKey, r.lim.PerKeyBurst) && r.global.Take(now, r.lim.Global, r.lim.GlobalBurst)
}

// Busy reports whether more than half of the global burst is spent at
// now: the sign of load that makes a responder ask for cookies.
func (r *Limiter[K]) Busy(now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.global
	tokens := r.lim.GlobalBurst
	if g.last != 0 {
		tokens = min(r.lim.GlobalBurst, g.tokens+float64(now-g.last)/float64(time.Second)*r.lim.Global)
	}
	return tokens < r.lim.GlobalBurst/2
}

// Prune forgets the keys whose buckets are full again at now.
func (r *Limiter[K]) Prune(now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	full := int64(time.Duration(r.lim.PerKeyBurst/r.lim.PerKey+1) * time.Second)
	for k, b := range r.buckets {
		if now-b.last > full {
			delete(r.buckets, k)
		}
	}
}

// Len returns how many keys are tracked.
func (r *Limiter[K]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}
