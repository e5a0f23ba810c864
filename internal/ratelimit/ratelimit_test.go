package ratelimit

import (
	"testing"
	"time"
)

var testLimits = Limits{PerKey: 5, PerKeyBurst: 10, Global: 1000, GlobalBurst: 2000, MaxKeys: 4}

func TestLimiterPerKey(t *testing.T) {
	r := New[string](testLimits)
	now := int64(time.Hour)
	allowed := 0
	for i := 0; i < 100; i++ {
		if r.Allow("a", now) {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("burst: %d allowed, want 10", allowed)
	}
	if !r.Allow("b", now) {
		t.Fatal("one key's flood blocked another")
	}
	if r.Allow("a", now+int64(100*time.Millisecond)) {
		t.Fatal("refilled too fast")
	}
	if !r.Allow("a", now+int64(time.Second)) {
		t.Fatal("not refilled after a second")
	}
	r.Prune(now + int64(time.Minute))
	if n := r.Len(); n != 0 {
		t.Fatalf("%d keys left after prune", n)
	}
}

func TestLimiterMaxKeys(t *testing.T) {
	r := New[int](testLimits)
	now := int64(time.Hour)
	for k := 0; k < 4; k++ {
		if !r.Allow(k, now) {
			t.Fatalf("key %d refused below the cap", k)
		}
	}
	if r.Allow(99, now) {
		t.Fatal("a fifth key was tracked past MaxKeys")
	}
	r.Prune(now + int64(time.Minute))
	if !r.Allow(99, now+int64(time.Minute)) {
		t.Fatal("prune did not make room")
	}
}

func TestLimiterGlobal(t *testing.T) {
	r := New[int](Limits{PerKey: 100, PerKeyBurst: 100, Global: 1, GlobalBurst: 3, MaxKeys: 100})
	now := int64(time.Hour)
	n := 0
	for k := 0; k < 10; k++ {
		if r.Allow(k, now) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d allowed across keys, want the global burst 3", n)
	}
}

func TestBucketStartsFull(t *testing.T) {
	var b Bucket
	now := int64(time.Hour)
	for i := 0; i < 3; i++ {
		if !b.Take(now, 1, 3) {
			t.Fatalf("take %d of a new bucket of 3 refused", i)
		}
	}
	if b.Take(now, 1, 3) {
		t.Fatal("took a fourth token from a bucket of 3")
	}
}

// TestLimiterKeyFirst: a key over its own share does not spend the global
// budget, so one flooding source cannot lock the others out.
func TestLimiterKeyFirst(t *testing.T) {
	r := New[string](Limits{PerKey: 1, PerKeyBurst: 2, Global: 1, GlobalBurst: 10, MaxKeys: 100})
	now := int64(time.Hour)
	for i := 0; i < 1000; i++ {
		r.Allow("flood", now)
	}
	for i, k := range []string{"a", "b"} {
		if !r.Allow(k, now) {
			t.Fatalf("key %d refused after one key's flood of 1000", i)
		}
	}
	if r.Busy(now) { // the flood spent 2 global tokens, a and b 2
		t.Fatal("busy with 4 of 10 global tokens spent")
	}
	r.Allow("c", now)
	r.Allow("d", now)
	if !r.Busy(now) {
		t.Fatal("not busy with 6 of 10 global tokens spent")
	}
}

func TestBucketTakeN(t *testing.T) {
	var b Bucket
	now := int64(time.Hour)
	if !b.TakeN(now, 10, 10, 7) {
		t.Fatal("7 of a new bucket of 10 refused")
	}
	if b.TakeN(now, 10, 10, 4) {
		t.Fatal("took 4 from 3 left")
	}
	if !b.TakeN(now, 10, 10, 3) {
		t.Fatal("the 3 left refused after a refused TakeN")
	}
	if !b.TakeN(now+int64(500*time.Millisecond), 10, 10, 5) {
		t.Fatal("5 refused after half a second at 10/s")
	}
	if b.TakeN(now+int64(400*time.Millisecond), 10, 10, 1) {
		t.Fatal("a clock that went back refilled the bucket")
	}
}

// TestPoolBound: however many sources take, and however often, the pool
// lets through no more than its rate and burst.
func TestPoolBound(t *testing.T) {
	const rate, burst = 1000, 250
	p := NewPool(rate, burst)
	own := make([]Bucket, 50)
	now := int64(time.Hour)
	got := 0.0
	for ms := 0; ms < 10000; ms++ { // 10 s, every source tries 49 copies each ms
		for i := range own {
			if p.Take(&own[i], len(own), 49, now+int64(ms)*int64(time.Millisecond)) {
				got += 49
			}
		}
	}
	if max := rate*10.0 + burst; got > max {
		t.Fatalf("%.0f events through a pool of %d/s (burst %d) in 10 s, want at most %.0f", got, rate, burst, max)
	}
	if got < rate*10*0.9 {
		t.Fatalf("%.0f events in 10 s of a pool of %d/s: the pool is not used", got, rate)
	}
}

// TestPoolFair: one source taking all it can does not stop another that
// stays within its share, and uses what is idle.
func TestPoolFair(t *testing.T) {
	const rate, burst = 1000, 250
	p := NewPool(rate, burst)
	var flood, quiet Bucket
	now := int64(time.Hour)
	floodGot, quietGot, quietTried := 0, 0, 0
	for ms := 0; ms < 10000; ms++ {
		at := now + int64(ms)*int64(time.Millisecond)
		for k := 0; k < 10; k++ { // 10 000 tries a second, 10 each
			if p.Take(&flood, 2, 10, at) {
				floodGot += 10
			}
		}
		if ms%10 == 0 { // 100 tries a second, 2 each: 200/s, below the share of 500
			quietTried += 2
			if p.Take(&quiet, 2, 2, at) {
				quietGot += 2
			}
		}
	}
	if quietGot != quietTried {
		t.Fatalf("the quiet source got %d of %d within its share while the other flooded", quietGot, quietTried)
	}
	// The flooder gets its share and what the quiet one leaves idle, down
	// to half the pool's burst: about 800/s.
	if floodGot < 7000 || floodGot > 8500 {
		t.Fatalf("the flooding source got %d in 10 s, want about 8000 (its share and the idle rest)", floodGot)
	}
}

// TestPoolLargeTake: a take larger than a source's share a second (a frame
// for many recipients in a large hub) still goes through.
func TestPoolLargeTake(t *testing.T) {
	p := NewPool(1000, 2000)
	var own Bucket
	if !p.Take(&own, 500, 499, int64(time.Hour)) {
		t.Fatal("499 copies refused from an idle pool with a share of 2/s")
	}
}
