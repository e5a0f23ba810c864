package dnstun

import "time"

// window is the client's congestion control: how many queries may be in
// flight, and when one counts as lost. It grows by one per answer in slow
// start and by about one per window of answers after that; a lost query,
// SERVFAIL or REFUSED cuts it by backoff, at most once per round trip (the queries
// already in flight when it was cut do not cut it again). Reordering is
// not a signal: a query is lost only when its timeout passes.
type window struct {
	cwnd, ssthresh float64
	max            float64
	srtt, rttvar   time.Duration
	lastCut        time.Time
	sampled        bool
	timeouts       int // in a row, without an answer: each doubles the timeout
	lastBackoff    time.Time
}

const (
	minRTO     = 150 * time.Millisecond
	maxRTO     = 3 * time.Second
	initialRTO = time.Second
	maxWindow  = 64
	// backoff is the factor a congestion event cuts the window by: less
	// than TCP's half, because through resolvers much loss is not
	// congestion.
	backoff = 0.7
)

func newWindow() window {
	return window{cwnd: 4, ssthresh: maxWindow, max: maxWindow}
}

// size is the number of queries that may be in flight.
func (w *window) size() int { return max(1, int(w.cwnd)) }

// rto is how long a query waits for its answer before it counts as lost.
func (w *window) rto() time.Duration {
	base := initialRTO
	if w.sampled {
		base = max(w.srtt+4*w.rttvar, minRTO)
	}
	return min(base<<w.timeouts, maxRTO)
}

// timedOut records a query that got no answer in time: the timeout doubles
// until an answer comes, so a dead resolver is not asked faster and faster.
// Queries that were in flight together count once.
func (w *window) timedOut(sent, now time.Time) {
	if sent.Before(w.lastBackoff) {
		return
	}
	w.lastBackoff = now
	if w.timeouts < 5 {
		w.timeouts++
	}
}

// answered records an answer to a query sent at sent; retried says the
// query's content was sent before (no RTT sample then).
func (w *window) answered(sent, now time.Time, retried bool) {
	w.timeouts = 0
	if rtt := now.Sub(sent); !retried && rtt >= 0 {
		if !w.sampled {
			w.srtt, w.rttvar, w.sampled = rtt, rtt/2, true
		} else {
			d := w.srtt - rtt
			if d < 0 {
				d = -d
			}
			w.rttvar = (3*w.rttvar + d) / 4
			w.srtt = (7*w.srtt + rtt) / 8
		}
	}
	if w.cwnd < w.ssthresh {
		w.cwnd++
	} else {
		w.cwnd += 1 / w.cwnd
	}
	w.cwnd = min(w.cwnd, w.max)
}

// congested records a lost, SERVFAILed or REFUSED query sent at sent.
func (w *window) congested(sent, now time.Time) {
	if sent.Before(w.lastCut) {
		return // in flight before the last cut: the same congestion event
	}
	w.ssthresh = max(w.cwnd*backoff, 2)
	w.cwnd = max(w.cwnd*backoff, 1)
	w.lastCut = now
}
