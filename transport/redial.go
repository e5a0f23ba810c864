package transport

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Redial paces the dial loop of a client carrier (a TCP, SSH or QUIC
// client): after a failed dial, or a connection that lived less than
// RedialMinLife, the next dial waits a backoff that starts at 100 ms and
// doubles to 5 s, jittered between half and all of it. The zero value is
// ready; it is used by one goroutine.
type Redial struct {
	failures int
}

// Redial timing.
const (
	redialMin = 100 * time.Millisecond
	redialMax = 5 * time.Second
	// RedialMinLife is how long a connection must live for its end not
	// to count as a failed dial.
	RedialMinLife = 2 * time.Second
)

// Delay is the wait before the next dial: 0 after a success.
func (r *Redial) Delay() time.Duration {
	if r.failures == 0 {
		return 0
	}
	d := min(redialMin<<min(r.failures-1, 6), redialMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Wait waits Delay, or until closed is closed; it reports whether the
// loop should go on.
func (r *Redial) Wait(closed <-chan struct{}) bool {
	d := r.Delay()
	if d == 0 {
		select {
		case <-closed:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-closed:
		return false
	}
}

// Failed records a dial that failed.
func (r *Redial) Failed() { r.failures++ }

// Ended records the end of a connection that began at began: one that
// lived less than RedialMinLife counts as a failed dial, a longer one
// clears the failures.
func (r *Redial) Ended(began time.Time) {
	if time.Since(began) < RedialMinLife {
		r.failures++
	} else {
		r.failures = 0
	}
}

// LastError holds the newest error of a client carrier, for status and
// tests. The zero value is ready and safe for concurrent use.
type LastError struct {
	mu  sync.Mutex
	err error
}

// Set records err.
func (l *LastError) Set(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// Get returns the newest error, or nil.
func (l *LastError) Get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
