package cab

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"cab/crypto"
	"cab/transport"
)

// Joining segments. After a handshake, a client with named segments (or
// without a default port) sends its server a join request in a sealed
// TypeControl packet: whether it has the default segment, and the named
// segments it wants, each with a proof of the segment's PSK when it has
// one (crypto.SegmentProof, bound to the session). The server decides
// each, makes the peer a member of those it may join, and replies with
// the outcome of every one; a refusal says why. The request is the whole
// of what the client wants, so it is sent again until a reply comes
// (every joinRetry), then every joinRefresh, and after every handshake:
// a lost packet, a server restarted or reloaded all settle within that
// time. Membership belongs to the peer, not the session, so a rekey
// loses nothing. A reload of the server decides every peer's last
// request again and sends the reply unasked.
//
// The messages are JSON (encoding/json parses them), at most
// maxControlLen bytes and maxJoins segments.
const (
	joinRetry     = time.Second
	joinRefresh   = 30 * time.Second
	maxControlLen = 1200
	maxJoins      = 16
	// joinSilence is how long a client waits for a first reply before it
	// warns that its server may not know segments.
	joinSilence = 10 * time.Second
)

// control is the plaintext of a TypeControl packet.
type control struct {
	Join  *joinRequest `json:"join,omitempty"`
	Reply *joinReply   `json:"reply,omitempty"`
}

type joinRequest struct {
	Default  bool       `json:"default"`
	Segments []joinItem `json:"segments"`
}

type joinItem struct {
	Name  string `json:"n"`
	Proof []byte `json:"p,omitempty"`
}

type joinReply struct {
	Segments []joinOutcome `json:"segments"`
}

// joinOutcome is the server's answer for one segment: joined, or why not
// (a code of whyText, short so that a reply for maxJoins segments of
// 32-byte names fits maxControlLen).
type joinOutcome struct {
	Name   string `json:"n"`
	Joined bool   `json:"ok"`
	Why    string `json:"why,omitempty"`
}

// The reasons of a refusal, as the reply carries them.
const (
	whyNoSegment  = "no-segment"
	whyPSKMissing = "psk-missing"
	whyPSKWrong   = "psk-wrong"
	whyNotAllowed = "not-allowed"
	whyNoAnswer   = "no-answer" // the client's own: the reply did not name it
)

// whyCode is what a refusal code may be.
var whyCode = regexp.MustCompile(`^[a-z-]{0,24}$`)

// whyText says in words why segment name was refused, for logs and status.
func whyText(code, name string) string {
	switch code {
	case whyNoSegment:
		return "no such segment on the server"
	case whyPSKMissing:
		return "the segment has a PSK of its own: give it to the client (psk=FILE in -s " + name + "=SPEC)"
	case whyPSKWrong:
		return "wrong PSK for the segment"
	case whyNotAllowed:
		return "not allowed for this key"
	case whyNoAnswer:
		return "the server did not answer for it"
	}
	return "refused by the server (" + code + ")"
}

// parseControl reads a control message, refusing one that is too long,
// not JSON, or names too many or malformed segments.
func parseControl(b []byte) (*control, error) {
	if len(b) > maxControlLen {
		return nil, errors.New("control message too long")
	}
	var m control
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if (m.Join == nil) == (m.Reply == nil) {
		return nil, errors.New("control message: want a join or a reply")
	}
	var names []string
	if m.Join != nil {
		for _, it := range m.Join.Segments {
			names = append(names, it.Name)
		}
	} else {
		for _, o := range m.Reply.Segments {
			names = append(names, o.Name)
			if !whyCode.MatchString(o.Why) {
				return nil, fmt.Errorf("control message: refusal code %.40q", o.Why)
			}
		}
	}
	if len(names) > maxJoins {
		return nil, fmt.Errorf("control message: %d segments, more than %d", len(names), maxJoins)
	}
	for _, n := range names {
		if err := CheckSegmentName(n); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// joinState is a peer's side of the join exchange.
type joinState struct {
	mu sync.Mutex
	// The client's.
	answered *session // the session a reply came in
	askedIn  *session // the session the last request went in
	lastSent int64    // when the last request went
	lastSeen int64    // when the last reply came
	firstAsk int64    // when the first request went
	warned   bool     // the server's silence was logged
	// The server's: the peer's last request, and the binding of the
	// session it came in, which its proofs are over.
	req     *joinRequest
	binding []byte
	// Both: the outcome of each segment as last logged.
	told map[string]string
}

// wantsJoin reports whether this cable asks its servers for segments: it
// is not a responder, and it has named segments or no default port.
func (c *Cable) wantsJoin() bool {
	return !c.cfg.Responder && (len(c.segments()) > 0 || !c.hasDefault())
}

// joinTimer sends p the join request when one is due at now.
func (c *Cable) joinTimer(p *peer, now int64) {
	if !c.wantsJoin() || p.dial == nil {
		return
	}
	s := p.hs.cur.Load()
	if s == nil {
		return
	}
	j := &p.join
	j.mu.Lock()
	every := joinRetry
	if j.answered == s {
		every = joinRefresh
	}
	due := now-j.lastSent >= int64(every) || j.askedIn != s // a new session asks at once
	if due {
		j.askedIn = s
		j.lastSent = now
		if j.firstAsk == 0 {
			j.firstAsk = now
		}
	}
	silent := j.lastSeen == 0 && !j.warned && now-j.firstAsk >= int64(joinSilence)
	j.warned = j.warned || silent
	j.mu.Unlock()
	if silent {
		c.log.Warn("the server has not answered the segment joins: is it a cab without segments? Only the default segment crosses to it", "peer", p.name(), "after", joinSilence)
	}
	if !due {
		return
	}
	req := &joinRequest{Default: c.hasDefault()}
	for _, seg := range c.segments() {
		it := joinItem{Name: seg.name}
		if seg.conf.PSK != nil {
			proof := crypto.SegmentProof(seg.conf.PSK, s.Binding(), seg.name)
			it.Proof = proof[:]
		}
		req.Segments = append(req.Segments, it)
	}
	slices.SortFunc(req.Segments, func(a, b joinItem) int { return strings.Compare(a.Name, b.Name) })
	c.sendControl(p, s, &control{Join: req}, now)
}

// sendControl seals m for p with s and sends it.
func (c *Cable) sendControl(p *peer, s *session, m *control, now int64) {
	pt := p.route.path.Load()
	if s == nil || pt == nil {
		return
	}
	b, err := json.Marshal(m)
	if err != nil || len(b) > maxControlLen {
		c.log.Warn("control message too long", "peer", p.name(), "bytes", len(b))
		return
	}
	buf := make([]byte, crypto.HeaderLen+len(b)+crypto.TagLen)
	copy(buf[crypto.HeaderLen:], b)
	pkt, err := s.SealFlags(crypto.TypeControl, p.flags(now), buf, len(b))
	if err != nil {
		return
	}
	p.noteSent(now)
	pt.conn.WriteBatch([]transport.Packet{{B: pkt, Addr: pt.addr}})
}

// handleControl handles an authenticated control message from p in s.
func (c *Cable) handleControl(p *peer, s *session, b []byte, now int64) {
	m, err := parseControl(b)
	if err != nil {
		c.drop(p, dropMalformed)
		return
	}
	switch {
	case m.Join != nil && c.cfg.Responder:
		p.join.mu.Lock()
		p.join.req, p.join.binding = m.Join, s.Binding()
		p.join.mu.Unlock()
		c.sendControl(p, s, &control{Reply: c.decideJoins(p)}, now)
	case m.Reply != nil && !c.cfg.Responder:
		c.joined(p, s, m.Reply, now)
	default:
		c.drop(p, dropMalformed)
	}
}

// decideJoins decides p's last join request afresh, makes p a member of
// the segments it may join (and of no other), and returns the reply.
func (c *Cable) decideJoins(p *peer) *joinReply {
	p.join.mu.Lock()
	req, binding := p.join.req, p.join.binding
	p.join.mu.Unlock()
	if req == nil {
		return nil
	}
	c.refreshAllowed(p)
	p.noDefault.Store(!req.Default)
	reply := &joinReply{}
	ok := map[uint32]*segment{}
	for _, it := range req.Segments {
		o := joinOutcome{Name: it.Name}
		seg := c.segmentNamed(it.Name)
		if seg == nil {
			o.Why = whyNoSegment
		} else if o.Why = c.mayJoin(p, seg, it.Proof, binding); o.Why == "" {
			o.Joined = true
			ok[seg.id] = seg
		}
		reply.Segments = append(reply.Segments, o)
		c.logOutcome(p, o)
	}
	c.memberOf(p, ok)
	return reply
}

// mayJoin returns why (a code) p may not join seg with proof (made in the
// session of binding), or "" when it may. A segment with a PSK of its own takes
// any peer that proves it holds that PSK, and no other; one without takes
// the peers whose configuration (allow file line, [[peer]] table) lists
// it, and in PSK-only mode every peer.
func (c *Cable) mayJoin(p *peer, seg *segment, proof, binding []byte) string {
	if seg.conf.PSK != nil {
		switch {
		case len(proof) == 0:
			return whyPSKMissing
		case !crypto.CheckSegmentProof(seg.conf.PSK, binding, seg.name, proof):
			return whyPSKWrong
		}
		return ""
	}
	if l := p.allowed.Load(); l != nil && slices.Contains(*l, seg.name) {
		return ""
	}
	if p.dynamic && c.cfg.AllowAny && c.cfg.Allow == nil {
		return ""
	}
	return whyNotAllowed
}

// logOutcome logs o for p when it differs from what was last logged.
func (c *Cable) logOutcome(p *peer, o joinOutcome) {
	p.join.mu.Lock()
	if p.join.told == nil {
		p.join.told = map[string]string{}
	}
	why := ""
	if !o.Joined {
		why = whyText(o.Why, o.Name)
	}
	was, seen := p.join.told[o.Name]
	p.join.told[o.Name] = why
	p.join.mu.Unlock()
	if seen && was == why {
		return
	}
	if o.Joined {
		c.log.Info("segment joined", "segment", o.Name, "peer", p.name())
	} else {
		c.log.Warn("segment "+o.Name+": "+why, "segment", o.Name, "peer", p.name())
	}
}

// joined takes the server's reply r, in s: p (the server) is now the
// cable's way into the segments it joined, and out of the others.
func (c *Cable) joined(p *peer, s *session, r *joinReply, now int64) {
	p.join.mu.Lock()
	p.join.answered, p.join.lastSeen = s, now
	p.join.mu.Unlock()
	ok := map[uint32]*segment{}
	said := map[string]bool{}
	for _, o := range r.Segments {
		seg := c.segmentNamed(o.Name)
		if seg == nil || said[o.Name] {
			continue // not asked for (a reload of ours dropped it)
		}
		said[o.Name] = true
		if o.Joined {
			ok[seg.id] = seg
		}
		c.logOutcome(p, o)
	}
	for _, seg := range c.segments() {
		if !said[seg.name] {
			c.logOutcome(p, joinOutcome{Name: seg.name, Why: whyNoAnswer})
		}
	}
	c.memberOf(p, ok)
}

// refreshAllowed asks Config.AllowedSegments again about dynamic peer p,
// and reports whether the answer changed.
func (c *Cable) refreshAllowed(p *peer) bool {
	if !p.dynamic || c.cfg.AllowedSegments == nil {
		return false
	}
	segs := c.cfg.AllowedSegments(p.key)
	if old := p.allowed.Load(); old != nil && slices.Equal(*old, segs) || old == nil && segs == nil {
		return false
	}
	p.allowed.Store(&segs)
	return true
}

// redecide decides p's joins again, and tells p.
func (c *Cable) redecide(p *peer) {
	if r := c.decideJoins(p); r != nil {
		c.sendControl(p, p.hs.cur.Load(), &control{Reply: r}, time.Now().UnixNano())
	}
}

// rejoinAll decides every peer's joins again after a change of the
// segments or of what peers may join: a server replies unasked, a client
// asks at once.
func (c *Cable) rejoinAll() {
	for _, p := range c.peerList() {
		if c.cfg.Responder {
			c.redecide(p)
			continue
		}
		p.join.mu.Lock()
		p.join.answered, p.join.askedIn, p.join.lastSent = nil, nil, 0
		p.join.mu.Unlock()
	}
	c.kickTimers()
}

// memberOf makes p a member of the segments in ok and of no other named
// one, keeping the memberships it has (and their MACs and limits).
func (c *Cable) memberOf(p *peer, ok map[uint32]*segment) {
	c.setMembers(p, func(m members) {
		for id, ms := range m {
			if ok[id] != ms.seg {
				delete(m, id)
			}
		}
		for id, seg := range ok {
			if m[id] == nil {
				m[id] = &membership{seg: seg}
			}
		}
	})
}
