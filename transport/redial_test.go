package transport

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestRedial: no wait at first; failed dials and short-lived connections
// double the wait (jittered between half and all of it) up to 5 s; a
// connection that lived long clears it; Wait ends early when closed.
func TestRedial(t *testing.T) {
	var r Redial
	if d := r.Delay(); d != 0 {
		t.Fatalf("first dial waits %v", d)
	}
	for n := 1; n <= 10; n++ {
		r.Failed()
		full := min(redialMin<<min(n-1, 6), redialMax)
		for range 20 {
			if d := r.Delay(); d < full/2 || d > full {
				t.Fatalf("after %d failures: %v, want %v..%v", n, d, full/2, full)
			}
		}
	}
	r.Ended(time.Now()) // died at once: one more failure
	if r.failures != 11 {
		t.Fatalf("failures %d after a short-lived connection, want 11", r.failures)
	}
	r.Ended(time.Now().Add(-RedialMinLife))
	if d := r.Delay(); d != 0 {
		t.Fatalf("after a long-lived connection: %v, want 0", d)
	}

	synctest.Test(t, func(t *testing.T) {
		var r Redial
		for range 7 {
			r.Failed()
		}
		closed := make(chan struct{})
		start := time.Now()
		if !r.Wait(closed) {
			t.Fatal("Wait said stop while not closed")
		}
		if d := time.Since(start); d < redialMax/2 || d > redialMax {
			t.Fatalf("waited %v, want %v..%v", d, redialMax/2, redialMax)
		}
		close(closed)
		start = time.Now()
		if r.Wait(closed) {
			t.Fatal("Wait said go on once closed")
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("closed Wait took %v", d)
		}
	})

	var l LastError
	if l.Get() != nil {
		t.Fatal("a new LastError holds an error")
	}
	e := errors.New("x")
	l.Set(e)
	if l.Get() != e {
		t.Fatal("LastError lost its error")
	}
}
