package transport

import (
	"errors"
	"net"
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

// TestReadQueued: it waits for one packet, then takes what is queued up
// to the batch's size; a packet longer than its buffer is dropped; every
// buffer is released; after closed, net.ErrClosed.
func TestReadQueued(t *testing.T) {
	rx := make(chan Packet, 8)
	closed := make(chan struct{})
	var released int
	release := func([]byte) { released++ }
	rx <- Packet{B: []byte("one"), Addr: testAddr("a")}
	rx <- Packet{B: make([]byte, 100), Addr: testAddr("b")} // too long for its buffer
	rx <- Packet{B: []byte("three"), Addr: testAddr("c")}
	rx <- Packet{B: []byte("four"), Addr: testAddr("d")}
	ps := make([]Packet, 2)
	for i := range ps {
		ps[i].B = make([]byte, 0, 10)
	}
	n, err := ReadQueued(rx, closed, ps, release)
	if err != nil || n != 2 || string(ps[0].B) != "one" || string(ps[1].B) != "three" || ps[1].Addr != testAddr("c") {
		t.Fatalf("ReadQueued: %d %v %q %q", n, err, ps[0].B, ps[1].B)
	}
	if released != 3 {
		t.Fatalf("%d buffers released, want 3", released)
	}
	if n, _ := ReadQueued(rx, closed, ps, nil); n != 1 || string(ps[0].B) != "four" {
		t.Fatalf("the rest: %d %q", n, ps[0].B)
	}
	close(closed)
	if _, err := ReadQueued(rx, closed, ps, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

type testAddr string

func (a testAddr) String() string { return string(a) }

// TestFreeList: a buffer put back is handed out again, without an
// allocation; one out of the kept range is not kept; Get never returns a
// buffer smaller than asked.
func TestFreeList(t *testing.T) {
	f := NewFreeList(2, 100, 1000)
	f.Put(make([]byte, 5, 200))
	allocs := testing.AllocsPerRun(100, func() { f.Put(f.Get(150)) })
	if allocs != 0 {
		t.Errorf("%.1f allocations per Get and Put, want 0", allocs)
	}
	if b := f.Get(150); len(b) != 0 || cap(b) != 200 {
		t.Errorf("Get(150) = len %d cap %d, want the kept buffer, emptied", len(b), cap(b))
	}
	f.Put(make([]byte, 0, 2000)) // too big to keep
	f.Put(make([]byte, 0, 50))   // too small to keep
	if b := f.Get(10); cap(b) != 100 {
		t.Errorf("Get(10) after outsized Puts: cap %d, want a new buffer of 100", cap(b))
	}
	f.Put(make([]byte, 0, 120))
	if b := f.Get(500); cap(b) < 500 {
		t.Errorf("Get(500) = cap %d, want at least 500", cap(b))
	}
}
