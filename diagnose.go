package cab

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"cab/transport"
)

// What the cable says when something is wrong, so that an operator need
// not guess from counters: a client whose handshakes go unanswered says so
// and why it might be, a server says which handshakes it refused and why,
// and two clients that hold one key are named.

// Client side: handshakes that go unanswered.
const (
	// noAnswerAfter is how long handshakes go unanswered before the
	// client warns; the warnings then come noAnswerFirst apart, doubling
	// to noAnswerMax.
	noAnswerAfter = 5 * time.Second
	noAnswerFirst = 10 * time.Second
	noAnswerMax   = 5 * time.Minute
	// badAnswerEvery is how often at most the client warns of answers
	// that do not authenticate.
	badAnswerEvery = time.Minute
)

// noAnswer is a warning due: tries initiations to addr over p's dialer via
// went unanswered.
type noAnswer struct {
	addr  transport.Addr
	via   int
	tries int
}

// noteTryLocked counts an initiation to addr over dialer via. p.hs.mu must
// be held.
func (p *peer) noteTryLocked(addr transport.Addr, via int, now time.Time) {
	if p.hs.tries == 0 {
		p.hs.firstTry = now
	}
	p.hs.tries++
	p.hs.lastTo, p.hs.lastVia = addr, via
}

// noAnswerDueLocked returns the warning due at now, if any. p.hs.mu must
// be held.
func (p *peer) noAnswerDueLocked(now time.Time) (noAnswer, bool) {
	if p.hs.tries == 0 || p.hs.lastTo == nil || now.Sub(p.hs.firstTry) < noAnswerAfter || now.Before(p.hs.nextWarn) {
		return noAnswer{}, false
	}
	p.hs.warnEvery = min(max(2*p.hs.warnEvery, noAnswerFirst), noAnswerMax)
	p.hs.nextWarn = now.Add(p.hs.warnEvery)
	p.hs.warned = true
	return noAnswer{addr: p.hs.lastTo, via: p.hs.lastVia, tries: p.hs.tries}, true
}

// answeredLocked notes a completed handshake, and says so when the client
// had warned that none came. p.hs.mu must be held.
func (c *Cable) answeredLocked(p *peer) {
	if p.hs.warned {
		c.log.Info("handshake answered", "peer", p.name(), "after_tries", p.hs.tries)
	}
	p.hs.tries, p.hs.warned, p.hs.warnEvery, p.hs.nextWarn = 0, false, 0, time.Time{}
}

// warnNoAnswer logs that w.tries handshakes to p went unanswered, and why
// that may be: exactly, when the carrier can tell (nothing listens at the
// addr), else the likely causes. It may block on the carrier's check, so
// it runs on a goroutine of its own.
func (c *Cable) warnNoAnswer(p *peer, w noAnswer) {
	conn := p.dialers[w.via].Conn
	tr := transportName(conn)
	if tr == "" {
		tr = "its carrier"
	}
	head := fmt.Sprintf("no handshake answer from %s over %s after %d tries", w.addr, tr, w.tries)
	var err error
	if rc, ok := conn.(transport.ReachChecker); ok {
		err = rc.CheckReach(w.addr)
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		c.log.Warn(head+": nothing listens on "+w.addr.String()+" (the server is not running there, or the port is wrong)", "peer", p.name())
	case err != nil:
		c.log.Warn(head+": "+err.Error(), "peer", p.name())
	default:
		c.log.Warn(head+"; likely: the server is not running or the port is wrong; the PSK or the server key does not match; "+
			"this client's key is not in the server's allow file; another client holds this key; "+tr+" is blocked on the path",
			"peer", p.name())
	}
}

// badAnswerLocked warns, at most once a badAnswerEvery, that an answer to
// p's handshake did not authenticate. p.hs.mu must be held.
func (c *Cable) badAnswerLocked(p *peer, addr transport.Addr, now int64) {
	if now-p.hs.lastBadAnswer < int64(badAnswerEvery) {
		return
	}
	p.hs.lastBadAnswer = now
	c.log.Warn("a handshake answer from "+addr.String()+" does not authenticate: the PSK does not match the server's", "peer", p.name())
}

// Server side: handshakes refused.
const (
	refusalEvery   = time.Minute // a source's refusals are logged once a minute at most
	refusalSources = 1024        // sources remembered for that
)

// Why a handshake was refused, as the server's log says it.
const (
	refusedMAC       = "mac1 invalid: a wrong PSK or a wrong server key"
	refusedUndecrypt = "the initiation does not decrypt"
	refusedKey       = "key not allowed"
	refusedBusy      = "too many handshakes pending from this host"
	refusedReplay    = "replayed initiation"
	refusedRate      = "rate limited"
	refusedDuplicate = "another client holds this key"
)

// refusalLog logs refused handshakes, once a refusalEvery per source at
// most, and once a refusalEvery a summary of those it did not log one by
// one. It is safe for concurrent use.
type refusalLog struct {
	mu      sync.Mutex
	last    map[string]int64  // source → when a refusal from it was last logged
	skipped map[string]uint64 // reason → refusals not logged since the summary
	summary int64             // when the last summary was due
}

// refused logs a handshake from addr refused for reason, with attrs, or
// counts it for the summary.
func (c *Cable) refused(addr transport.Addr, reason string, now int64, attrs ...any) {
	r := &c.refusals
	key := sourceKey(addr)
	r.mu.Lock()
	if r.last == nil {
		r.last, r.skipped, r.summary = map[string]int64{}, map[string]uint64{}, now
	}
	t, seen := r.last[key]
	if seen && now-t < int64(refusalEvery) || !seen && len(r.last) >= refusalSources {
		r.skipped[reason]++
		r.mu.Unlock()
		return
	}
	r.last[key] = now
	r.mu.Unlock()
	c.log.Warn("handshake refused", append([]any{"src", addr.String(), "reason", reason}, attrs...)...)
}

// summarise logs, once a refusalEvery, how many refusals were not logged
// one by one, and forgets sources not heard from since.
func (c *Cable) summarise(now int64) {
	r := &c.refusals
	r.mu.Lock()
	if r.last == nil || now-r.summary < int64(refusalEvery) {
		r.mu.Unlock()
		return
	}
	r.summary = now
	var parts []string
	total := uint64(0)
	for reason, n := range r.skipped {
		parts = append(parts, fmt.Sprintf("%s: %d", reason, n))
		total += n
	}
	clear(r.skipped)
	for k, t := range r.last {
		if now-t >= int64(refusalEvery) {
			delete(r.last, k)
		}
	}
	r.mu.Unlock()
	if total > 0 {
		sort.Strings(parts)
		c.log.Warn("more handshakes refused in the last minute", "count", total, "reasons", strings.Join(parts, "; "))
	}
}

// sourceKey is the source of addr as a string: the host where the carrier
// tells it, else the addr.
func sourceKey(addr transport.Addr) string {
	if s := sourceOf(addr); s.host.IsValid() {
		return s.host.String()
	}
	return addr.String()
}

// Two clients with one key. Their packets take the peer's path back and
// forth between their two addrs; after dupFlips such changes, each within
// dupWindow of the last, the cable keeps the client whose handshake is
// newer and holds the other off (its packets and handshakes dropped) for
// dupHold, twice as long each time it comes back within dupForget, up to
// dupHoldMax. The warning names the key and both addrs, and Status shows
// it while the hold lasts.
const (
	dupFlips   = 3
	dupWindow  = 10 * time.Second
	dupHold    = 30 * time.Second
	dupHoldMax = 10 * time.Minute
	dupForget  = 10 * time.Minute
)

// dupState is what a peer knows of a second client with its key.
type dupState struct {
	mu        sync.Mutex
	prev      transport.Addr // the path's addr before the current one
	flips     int            // path changes back to prev, each within dupWindow of the last
	lastFlip  int64
	lastInit  transport.Addr // where the newest initiation came from
	held      transport.Addr // the other client, held off until heldUntil
	kept      transport.Addr
	heldUntil int64
	holds     int // holds in a row; each doubles the next
}

// noteInit records that p's newest initiation came from addr.
func (p *peer) noteInit(addr transport.Addr) {
	p.dup.mu.Lock()
	p.dup.lastInit = addr
	p.dup.mu.Unlock()
}

// heldOff reports whether addr is a second client with p's key, held off
// at now.
func (p *peer) heldOff(addr transport.Addr, now int64) bool {
	p.dup.mu.Lock()
	defer p.dup.mu.Unlock()
	return p.dup.held == addr && now < p.dup.heldUntil
}

// notePathChange notes that p's path moves from to to at now, and when
// that shows two clients with p's key, holds the older off and returns it.
func (c *Cable) notePathChange(p *peer, from, to transport.Addr, now int64) (held transport.Addr) {
	d := &p.dup
	d.mu.Lock()
	switch {
	case to == d.prev && now-d.lastFlip < int64(dupWindow):
		d.flips++
	case to == d.prev:
		d.flips = 1
	default:
		d.flips = 0
	}
	d.lastFlip, d.prev = now, from
	if d.flips < dupFlips {
		d.mu.Unlock()
		return nil
	}
	d.flips = 0
	kept, held := to, from
	if d.lastInit == from {
		kept, held = from, to
	}
	if now-d.heldUntil > int64(dupForget) {
		d.holds = 0
	}
	hold := min(dupHold<<min(d.holds, 8), dupHoldMax)
	d.holds++
	d.held, d.kept, d.heldUntil = held, kept, now+int64(hold)
	d.mu.Unlock()
	c.log.Warn("two clients use one key: keeping the newer, holding the other off", "peer", p.name(), "key", p.key.Short(),
		"kept", kept.String(), "held_off", held.String(), "for", hold)
	return held
}

// DuplicateKey describes a second client with a peer's key, for Status.
type DuplicateKey struct {
	Kept      string    `json:"kept"`     // the addr of the client kept
	HeldOff   string    `json:"held_off"` // the addr of the one held off
	HeldUntil time.Time `json:"held_until"`
}

// duplicate returns p's DuplicateKey while a hold lasts, else nil.
func (p *peer) duplicate(now int64) *DuplicateKey {
	p.dup.mu.Lock()
	defer p.dup.mu.Unlock()
	if p.dup.held == nil || now >= p.dup.heldUntil {
		return nil
	}
	return &DuplicateKey{Kept: p.dup.kept.String(), HeldOff: p.dup.held.String(), HeldUntil: time.Unix(0, p.dup.heldUntil)}
}
