// Package ratelimit has the token buckets that bound what a sender may make
// a cable do: handshakes per source and in total, flooded frames per peer.
// It imports nothing of cab's; the caller passes the time, so tests need no
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
func (b *Bucket) Take(now int64, rate, burst float64) bool {
	if b.last == 0 {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+float64(now-b.last)/float64(time.Second)*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
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
