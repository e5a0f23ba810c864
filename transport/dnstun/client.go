package dnstun

import (
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/miekg/dns"

	"cab/transport"
)

// Client timers and limits.
const (
	minPoll      = 10 * time.Millisecond
	maxPoll      = 2 * time.Second // idle polling is never slower: ARP and keepalives need it
	upQueueLen   = 48              // packets waiting to go upstream
	lateAnswers  = 10 * time.Second
	clientIdle   = 90 * time.Second // no writes for this long: stop polling
	ackResends   = 2
	reasmClient  = 64
	openInterval = time.Second
)

// ServerAddr is the one remote end of a Client: the tunnel server behind
// the resolver.
type ServerAddr struct{ zone string }

func (a ServerAddr) String() string { return "dns://" + a.zone }

// query is a query in flight (or lost but still answerable).
type query struct {
	id      uint16
	name    string
	sent    time.Time
	lost    bool
	frag    *fragRef
	open    bool
	retried bool
}

// fragRef is one fragment of an upstream packet.
type fragRef struct {
	op  *outPacket
	idx int
}

type ackState struct {
	mask  uint16
	sends int
}

// clientCore is the tunnel client without sockets: it decides what to ask,
// and makes sense of the answers. send hands a packed query to the
// resolver.
type clientCore struct {
	zone     string
	log      *slog.Logger
	send     func([]byte) error
	fragSize int
	wake     chan struct{}
	rx       chan transport.Packet
	addr     ServerAddr

	mu         sync.Mutex
	sid        uint32
	opened     bool
	lastOpen   time.Time
	seq        uint16
	win        window
	inflight   map[uint16]*query // by DNS message id
	active     int               // queries in flight not yet counted lost
	upq        []*outPacket
	retx       []fragRef
	nextID     uint16
	acks       map[uint16]*ackState
	reasm      *reassembler
	pollEvery  time.Duration
	nextPoll   time.Time
	flowing    bool // the last answer brought data: keep the window full of polls
	lastWrite  time.Time
	lastAnswer time.Time
	closed     bool
	rate       rate
	stats      clientStats
}

type clientStats struct {
	queries, answers, lost, servfail, nxdomain, badAnswers, upDrops, rxDrops, packetsIn, packetsOut uint64
	lossEWMA                                                                                        float64
}

func newClientCore(zone string, log *slog.Logger, send func([]byte) error) *clientCore {
	room := NameCapacity(zone) - upHeaderLen - 2*ackLen - upFragHdrLen
	c := &clientCore{zone: zone, log: log, send: send, fragSize: room, wake: make(chan struct{}, 1),
		rx: make(chan transport.Packet, rxQueueLen), addr: ServerAddr{zone: zone[:len(zone)-1]},
		sid: rand.Uint32(), seq: uint16(rand.Uint32()), win: newWindow(), inflight: make(map[uint16]*query),
		acks: make(map[uint16]*ackState), reasm: newReassembler(reasmClient, packetDeadline), pollEvery: minPoll}
	return c
}

// kick wakes the client loop.
func (c *clientCore) kick() { transport.Wake(c.wake) }

// write queues pkt for the server.
func (c *clientCore) write(pkt []byte, now time.Time) {
	c.mu.Lock()
	c.lastWrite = now
	if len(c.upq) >= upQueueLen {
		c.stats.upDrops++
		c.mu.Unlock()
		return
	}
	frags := split(pkt, c.fragSize)
	op := &outPacket{id: c.nextID, frags: frags, sent: make([]time.Time, len(frags)), tries: make([]uint8, len(frags)), deadline: now.Add(packetDeadline)}
	c.nextID++
	c.upq = append(c.upq, op)
	c.stats.packetsOut++
	c.mu.Unlock()
	c.kick()
}

// step sends what is due at now and returns when it next needs to run.
func (c *clientCore) step(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := now.Add(maxPoll)
	// Queries whose time is up count as lost; their fragments go again.
	rto := c.win.rto()
	for id, q := range c.inflight {
		switch {
		case !q.lost && now.Sub(q.sent) >= rto:
			q.lost = true
			c.active--
			c.stats.lost++
			c.stats.lossEWMA = c.stats.lossEWMA*0.95 + 0.05
			c.win.congested(q.sent, now)
			if c.lastAnswer.Before(q.sent) { // nothing answered since: the resolver may be gone
				c.win.timedOut(q.sent, now)
			}
			if q.frag != nil {
				c.retx = append(c.retx, *q.frag)
			}
		case q.lost && now.Sub(q.sent) >= lateAnswers:
			delete(c.inflight, id)
		case !q.lost:
			next = earlier(next, q.sent.Add(rto))
		}
	}
	if c.closed || now.Sub(c.lastWrite) >= clientIdle {
		if c.opened && !c.closed {
			c.opened = false // idle: a new session when there is something to send again
			c.log.Debug("dns tunnel idle: no more polls")
		}
		return next
	}
	if !c.opened {
		if c.active == 0 && now.Sub(c.lastOpen) >= openInterval {
			c.lastOpen = now
			c.sendQuery(now, true, nil, nil)
		}
		return earlier(next, c.lastOpen.Add(openInterval))
	}
	// While data comes down, the window fills with polls; when idle, a
	// poll goes on a timer that backs off to maxPoll.
	for c.active < c.win.size() {
		f := c.nextFrag(now)
		acks := c.takeAcks(f != nil)
		timed := !now.Before(c.nextPoll)
		if f == nil && len(acks) == 0 && !timed && !c.flowing {
			break
		}
		c.sendQuery(now, false, f, acks)
		if f == nil && len(acks) == 0 && !c.flowing {
			c.nextPoll = now.Add(c.pollEvery)
			c.pollEvery = min(2*c.pollEvery, maxPoll)
		}
	}
	return earlier(next, c.nextPoll)
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// nextFrag returns the next fragment to send: a lost one first, then the
// next of the oldest packet; stale packets are dropped.
func (c *clientCore) nextFrag(now time.Time) *fragRef {
	for len(c.retx) > 0 {
		f := c.retx[0]
		c.retx = c.retx[1:]
		if f.op.acked&(1<<f.idx) == 0 && now.Before(f.op.deadline) {
			return &f
		}
	}
	for len(c.upq) > 0 {
		op := c.upq[0]
		// A packet that waited long for its first query is dropped
		// rather than started late: a queue that does not drain turns
		// into loss, not into packets that all miss their deadline.
		if now.After(op.deadline) || op.tries[0] == 0 && op.deadline.Sub(now) < packetDeadline*2/3 {
			c.upq = c.upq[1:]
			c.stats.upDrops++
			continue
		}
		for i := range op.frags {
			if op.tries[i] == 0 {
				if i == len(op.frags)-1 {
					c.upq = c.upq[1:]
				}
				return &fragRef{op: op, idx: i}
			}
		}
		c.upq = c.upq[1:]
	}
	return nil
}

// takeAcks returns the acks to put in the next query: two beside a
// fragment, up to maxAcks in a query of its own.
func (c *clientCore) takeAcks(withFrag bool) []ack {
	n := maxAcks
	if withFrag {
		n = 2
	}
	var out []ack
	for id, a := range c.acks {
		if len(out) == n {
			break
		}
		out = append(out, ack{id: id, mask: a.mask})
		a.sends++
		if a.sends >= ackResends {
			delete(c.acks, id)
		}
	}
	return out
}

// sendQuery packs and sends one query; c.mu is held.
func (c *clientCore) sendQuery(now time.Time, open bool, f *fragRef, acks []ack) {
	c.seq++
	u := up{open: open, sid: c.sid, seq: c.seq, nonce: uint16(rand.Uint32()), acks: acks}
	q := &query{sent: now, frag: f, open: open}
	if f != nil {
		op := f.op
		u.frag = &upFrag{id: op.id, idx: uint8(f.idx), count: uint8(len(op.frags)), b: op.frags[f.idx]}
		q.retried = op.tries[f.idx] > 0
		op.tries[f.idx]++
		op.sent[f.idx] = now
	}
	name, err := EncodeName(appendUp(nil, &u), c.zone)
	if err != nil {
		c.log.Error("dns tunnel: query does not fit", "err", err)
		return
	}
	m := new(dns.Msg)
	for {
		q.id = uint16(rand.Uint32())
		if c.inflight[q.id] == nil {
			break
		}
	}
	m.Id = q.id
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: name, Qtype: dns.TypeTXT, Qclass: dns.ClassINET}}
	m.SetEdns0(EDNSSize, false)
	b, err := m.Pack()
	if err != nil {
		return
	}
	q.name = name
	c.inflight[q.id] = q
	c.active++
	c.stats.queries++
	c.rate.add(now)
	c.send(b)
}

// answer takes one message from the resolver.
func (c *clientCore) answer(b []byte, now time.Time) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil || !m.Response || len(m.Question) != 1 {
		c.mu.Lock()
		c.stats.badAnswers++
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.inflight[m.Id]
	if q == nil || dns.CanonicalName(m.Question[0].Name) != dns.CanonicalName(q.name) {
		c.stats.badAnswers++
		return
	}
	delete(c.inflight, m.Id)
	if !q.lost {
		c.active--
	}
	switch m.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		// The server does not know the session (it restarted, or forgot
		// us): open it again.
		c.stats.nxdomain++
		if !q.open && c.opened {
			c.opened = false
			c.log.Info("dns tunnel: the server forgot the session; opening it again")
		}
		c.requeue(q)
		c.kick()
		return
	default: // SERVFAIL, REFUSED: the resolver or the server is overloaded
		c.stats.servfail++
		c.win.congested(q.sent, now)
		c.requeue(q)
		c.kick()
		return
	}
	var payload []byte
	for _, rr := range m.Answer {
		if rr.Header().Rrtype != dns.TypeTXT {
			continue
		}
		var raw dns.RFC3597
		if raw.ToRFC3597(rr) != nil {
			continue
		}
		rd, err := hex.DecodeString(raw.Rdata)
		if err != nil {
			continue
		}
		if payload, err = parseTXT(rd); err == nil {
			break
		}
	}
	if payload == nil {
		c.stats.badAnswers++
		c.requeue(q)
		return
	}
	var frags []downFrag
	more, err := parseDown(payload, func(f downFrag) { frags = append(frags, f) })
	if err != nil {
		c.stats.badAnswers++
		c.requeue(q)
		return
	}
	c.stats.answers++
	c.stats.lossEWMA *= 0.95
	c.lastAnswer = now
	if !q.lost {
		c.win.answered(q.sent, now, q.retried)
	}
	if q.frag != nil {
		q.frag.op.acked |= 1 << q.frag.idx
	}
	if q.open {
		if !c.opened {
			c.opened = true
			c.log.Info("dns tunnel session open", "zone", c.addr.zone)
		}
	}
	switch {
	case len(frags) > 0 || more:
		c.flowing = true
		c.pollEvery = minPoll
	case q.frag != nil:
		// Upstream data: its answer is likely waiting already.
		c.flowing = false
		c.pollEvery = minPoll
		c.nextPoll = now
	default:
		c.flowing = false
	}
	for _, f := range frags {
		a := c.acks[f.id]
		if a == nil {
			if len(c.acks) >= 4*maxAcks*upQueueLen {
				continue
			}
			a = &ackState{}
			c.acks[f.id] = a
		}
		a.mask |= 1 << f.idx
		a.sends = 0
		if pkt, _ := c.reasm.add(f.id, int(f.idx), int(f.count), f.b, now); pkt != nil {
			c.stats.packetsIn++
			select {
			case c.rx <- transport.Packet{B: pkt, Addr: c.addr}:
			default:
				c.stats.rxDrops++
			}
		}
	}
	c.kick()
}

// requeue sends q's fragment again (when q was not already counted lost,
// which requeued it).
func (c *clientCore) requeue(q *query) {
	if q.frag != nil && !q.lost {
		c.retx = append(c.retx, *q.frag)
	}
}

// pathStats reports on the tunnel.
func (c *clientCore) pathStats(now time.Time) transport.PathStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return transport.PathStats{QueriesPerSecond: c.rate.perSecond(now), Loss: c.stats.lossEWMA, RTT: c.win.srtt, Queries: c.stats.queries}
}
