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
