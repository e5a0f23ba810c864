package dnstun

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"cab/transport"
)

// Server limits and timers.
const (
	// MaxPacket is the largest cab packet the tunnel carries: a full
	// 1514-byte Ethernet frame (with a VLAN tag) and cab's overhead, so the
	// cable does not cut ordinary frames.
	MaxPacket = 1600

	// EDNSSize is the largest answer the server sends, and the size the
	// client advertises.
	EDNSSize = 1232

	maxSessions     = 64               // sessions the cable vouched for
	maxProbation    = 16               // sessions it has not (yet): the least recently active gives way to a new one
	sessionIdle     = 60 * time.Second // an idle session is forgotten
	probationIdle   = 10 * time.Second // an idle session on probation is forgotten
	evictableIdle   = 5 * time.Second  // a full table of vouched-for sessions gives way to one idle this long
	downFragSize    = 200
	downQueueLen    = 96 // packets queued to one client
	reasmPerSession = 32
	// packetDeadline is how long a packet is worth sending: after it, the
	// sender stops retransmitting it and the receiver drops its pieces.
	packetDeadline = 3 * time.Second
	answerCache    = 16
	rxQueueLen     = 512
)

// ClientAddr is a tunnel client of a Server: its session id.
type ClientAddr struct{ sid uint32 }

func (a ClientAddr) String() string { return fmt.Sprintf("dns-session-%08x", a.sid) }

// outPacket is a packet being sent in fragments, with each fragment's send
// time and whether it was acknowledged.
type outPacket struct {
	id       uint16
	frags    [][]byte
	sent     []time.Time
	tries    []uint8
	acked    uint64 // bitmask (downstream: at most 16 fragments)
	deadline time.Time
}

// session is one tunnel client, as the server knows it. A new session is
// on probation until the cable vouches for it (Server.Authenticated): it
// has its own small quota, gives way first, and gets nothing larger than
// its query over UDP.
type session struct {
	sid      uint32
	authed   bool
	answered bool // the cable sent it something (a handshake response)
	last     time.Time
	reasm    *reassembler
	down     []*outPacket
	nextID   uint16
	win      window // RTT estimate from acks, for the retransmission timer
	cache    [answerCache]cachedAnswer
	cacheI   int
	queries  uint64
	retx     uint64
	sentFrag uint64
	rate     rate
}

// cachedAnswer is a recent answer, by the query payload it answered, and
// where that query came from: over UDP the answer is given again only to
// the same place (a resolver's retry), never to whoever repeats the name.
type cachedAnswer struct {
	query, payload []byte
	from           netip.Prefix
}

// answerKind says what an answer gives, for the rules the socket applies.
type answerKind uint8

const (
	// answerStranger: anyone may ask and get it (NXDOMAIN, REFUSED, the
	// apex, probes); rate-limited and never larger than the query.
	answerStranger answerKind = iota
	// answerProbation: a tunnel answer to a session on probation, or a
	// cached answer asked for from elsewhere; never larger than the
	// query over UDP.
	answerProbation
	// answerTunnel: a tunnel answer to a session the cable vouched for.
	answerTunnel
)

// serverCore is the tunnel server without sockets: it turns queries into
// answers and keeps the sessions.
type serverCore struct {
	zone string
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[uint32]*session
	rx       chan transport.Packet
	stats    serverStats
	nodata   bool // NODATA, not NXDOMAIN, for names asked with other types than TXT
	rrl      rrl

	openLogged time.Time
}

type serverStats struct {
	queries, probes, nxdomain, refused, full, badQueries, rxDrops, txDrops, packetsIn uint64
	evicted, rrlDropped, rrlSlipped, truncated                                        uint64
}

func newServerCore(zone string, log *slog.Logger) *serverCore {
	return &serverCore{zone: zone, log: log, sessions: make(map[uint32]*session), rx: make(chan transport.Packet, rxQueueLen), rrl: newRRL()}
}

// answerSize is the largest answer req allows: its EDNS0 size, at most
// EDNSSize; 512 without EDNS0.
func answerSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return min(max(int(o.UDPSize()), 512), EDNSSize)
	}
	return 512
}

// handle answers req, received at now from an unknown place.
func (s *serverCore) handle(req *dns.Msg, now time.Time) *dns.Msg {
	resp, _ := s.handleFrom(req, netip.Prefix{}, now)
	return resp
}

// handleFrom answers req, received at now from the network from (the
// sender's /24 or /56; invalid when unknown), and says what kind of
// answer it is.
func (s *serverCore) handleFrom(req *dns.Msg, from netip.Prefix, now time.Time) (*dns.Msg, answerKind) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Compress = true
	resp.Authoritative = true
	if req.IsEdns0() != nil {
		resp.SetEdns0(EDNSSize, false)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.queries++
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 || req.Response {
		s.stats.badQueries++
		resp.Rcode = dns.RcodeFormatError
		resp.Authoritative = false
		return resp, answerStranger
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		resp.Rcode = dns.RcodeRefused
		return resp, answerStranger
	}
	p, err := DecodeName(q.Name, s.zone)
	switch {
	case err == errNotInZone && dns.IsSubDomain(s.zone, dns.Fqdn(q.Name)) && len(dns.Fqdn(q.Name)) == len(s.zone):
		s.apex(resp, q)
		return resp, answerStranger
	case err == errNotInZone:
		resp.Rcode = dns.RcodeRefused
		resp.Authoritative = false
		s.stats.refused++
		return resp, answerStranger
	case q.Qtype != dns.TypeTXT && (err == nil || s.nodata):
		// A resolver's QNAME-minimised probe (type A for a part of the
		// name): NXDOMAIN makes it ask for the whole name at once; NODATA,
		// for resolvers whose strict minimisation takes NXDOMAIN as final,
		// makes it go on label by label.
		s.stats.probes++
		if !s.nodata {
			resp.Rcode = dns.RcodeNameError
		}
		resp.Ns = []dns.RR{s.soa()}
		return resp, answerStranger
	case err != nil:
		return s.nxdomain(resp), answerStranger
	}
	var u up
	var fr upFrag
	var acks [maxAcks]ack
	u.acks = acks[:0]
	if parseUp(p, &u, &fr) != nil {
		return s.nxdomain(resp), answerStranger
	}
	ss := s.sessions[u.sid]
	if ss == nil {
		// Unknown sessions get NXDOMAIN (REFUSED would make a resolver
		// take the server for lame and stop asking it for everyone).
		// Opens are not limited by source: the clients behind one busy
		// resolver share it with whoever floods through it.
		if !u.open || !s.admit(now) {
			return s.nxdomain(resp), answerStranger
		}
		ss = &session{sid: u.sid, reasm: newReassembler(reasmPerSession, packetDeadline), win: newWindow()}
		s.sessions[u.sid] = ss
		if now.Sub(s.openLogged) >= time.Second { // floods of opens log once a second
			s.openLogged = now
			s.log.Info("dns tunnel session opened", "session", ClientAddr{u.sid}.String(), "sessions", len(s.sessions))
		}
	}
	ss.last = now
	ss.queries++
	ss.rate.add(now)
	kind := answerProbation
	if ss.authed {
		kind = answerTunnel
		s.rrl.vouch(from, now)
	}
	// The room left for payload in the answer.
	s.setTXT(resp, q, nil)
	room := answerSize(req) - resp.Len()
	maxPayload := 0
	for txtLen(maxPayload+1)-1 <= room {
		maxPayload++
	}
	for _, c := range ss.cache {
		if c.payload != nil && bytes.Equal(c.query, p) && len(c.payload) <= maxPayload {
			s.setTXT(resp, q, c.payload)
			if c.from != from {
				kind = answerProbation // not the asker of the first time
			}
			return resp, kind // a resolver's retry: the same answer again
		}
	}
	for _, a := range u.acks {
		ss.acked(a, now)
	}
	if f := u.frag; f != nil {
		if pkt, _ := ss.reasm.add(f.id, int(f.idx), int(f.count), f.b, now); pkt != nil {
			s.stats.packetsIn++
			select {
			case s.rx <- transport.Packet{B: pkt, Addr: ClientAddr{u.sid}}:
			default:
				s.stats.rxDrops++
			}
		}
	}
	payload := ss.fill(maxPayload, now)
	s.setTXT(resp, q, payload)
	ss.cache[ss.cacheI] = cachedAnswer{query: p, payload: payload, from: from}
	ss.cacheI = (ss.cacheI + 1) % answerCache
	return resp, kind
}

// idle reports whether ss has been idle long enough to be forgotten.
func (ss *session) idle(now time.Time) bool {
	if ss.authed {
		return now.Sub(ss.last) >= sessionIdle
	}
	return now.Sub(ss.last) >= probationIdle
}

// expire forgets idle sessions.
func (s *serverCore) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sid, ss := range s.sessions {
		if ss.idle(now) {
			delete(s.sessions, sid)
		}
	}
	s.rrl.prune(now)
}

// admit makes room for a new session on probation, forgetting idle ones
// and, when probation is full, the least recently active session on
// probation, one the cable never answered first (a client in the middle
// of its handshake has been answered). It never touches a session the
// cable vouched for: queries from strangers cannot push out a working
// tunnel.
func (s *serverCore) admit(now time.Time) bool {
	var oldest *session
	n := 0
	for sid, ss := range s.sessions {
		if ss.idle(now) {
			delete(s.sessions, sid)
			continue
		}
		if ss.authed {
			continue
		}
		n++
		if oldest == nil || oldest.answered && !ss.answered || oldest.answered == ss.answered && ss.last.Before(oldest.last) {
			oldest = ss
		}
	}
	if n < maxProbation {
		return true
	}
	if oldest == nil {
		s.stats.full++
		return false
	}
	delete(s.sessions, oldest.sid)
	s.stats.evicted++
	return true
}

// authenticate takes session sid off probation, when the table of
// vouched-for sessions has room or a session in it has been idle for
// evictableIdle.
func (s *serverCore) authenticate(sid uint32, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[sid]
	if ss == nil || ss.authed {
		return
	}
	var oldest *session
	n := 0
	for _, o := range s.sessions {
		if !o.authed {
			continue
		}
		n++
		if oldest == nil || o.last.Before(oldest.last) {
			oldest = o
		}
	}
	if n >= maxSessions {
		if now.Sub(oldest.last) < evictableIdle {
			s.stats.full++
			return
		}
		delete(s.sessions, oldest.sid)
	}
	ss.authed = true
}

// reply answers the query req of qlen bytes that came from addr (over
// UDP when udp) and returns the answer to send, or nil to send none.
// Over UDP an answer to strangers is rate-limited per source network
// (BIND's response-rate limiting: past the rate every second one gets a
// truncated answer, which sends a real resolver to TCP, and the others
// none), and nothing but a tunnel answer to a session the cable vouched
// for is ever larger than its query: the authority section goes first,
// then the answer is truncated.
func (s *serverCore) reply(req *dns.Msg, qlen int, addr netip.Addr, udp bool, now time.Time) []byte {
	from := sourceNet(addr)
	resp, kind := s.handleFrom(req, from, now)
	if !udp {
		b, _ := resp.Pack()
		return b
	}
	if kind == answerStranger {
		s.mu.Lock()
		ok, slip := s.rrl.allow(from, now)
		switch {
		case !ok && slip:
			s.stats.rrlSlipped++
		case !ok:
			s.stats.rrlDropped++
		}
		s.mu.Unlock()
		if !ok {
			if slip {
				return truncated(req, resp.Rcode, qlen)
			}
			return nil
		}
	}
	b, err := resp.Pack()
	if err != nil || len(b) > answerSize(req) {
		return nil
	}
	if kind == answerTunnel || len(b) <= qlen {
		return b
	}
	if len(resp.Ns) > 0 {
		resp.Ns = nil
		if b, err = resp.Pack(); err == nil && len(b) <= qlen {
			return b
		}
	}
	s.mu.Lock()
	s.stats.truncated++
	s.mu.Unlock()
	return truncated(req, resp.Rcode, qlen)
}

// truncated is the smallest answer to req: its question with TC set (a
// resolver asks again over TCP), or nothing when even that is larger than
// the query.
func truncated(req *dns.Msg, rcode, qlen int) []byte {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.Truncated = true
	m.Rcode = rcode
	b, err := m.Pack()
	if err != nil || len(b) > qlen {
		return nil
	}
	return b
}

// sourceNet is the network a source address is rate-limited by: its /24,
// or its /56 for IPv6, as BIND's RRL does.
func sourceNet(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap()
	bits := 56
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (s *serverCore) nxdomain(resp *dns.Msg) *dns.Msg {
	s.stats.nxdomain++
	resp.Rcode = dns.RcodeNameError
	resp.Ns = []dns.RR{s.soa()}
	return resp
}

func (s *serverCore) soa() *dns.SOA {
	return &dns.SOA{Hdr: dns.RR_Header{Name: s.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 0},
		Ns: "ns." + s.zone, Mbox: "hostmaster." + s.zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0}
}

// apex answers a question for the zone itself: SOA and NS, NODATA for other
// types.
func (s *serverCore) apex(resp *dns.Msg, q dns.Question) {
	switch q.Qtype {
	case dns.TypeSOA:
		soa := s.soa()
		soa.Hdr.Name = q.Name
		resp.Answer = []dns.RR{soa}
	case dns.TypeNS:
		resp.Answer = []dns.RR{&dns.NS{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: "ns." + s.zone}}
	default:
		resp.Ns = []dns.RR{s.soa()}
	}
}

// setTXT makes payload the answer of resp, in one TXT record under the
// question's name as it was asked.
func (s *serverCore) setTXT(resp *dns.Msg, q dns.Question, payload []byte) {
	b := make([]byte, 0, 1+len(payload))
	if payload == nil {
		payload = []byte{flagVersion}
	}
	b = appendTXT(b, payload)
	resp.Answer = []dns.RR{&dns.RFC3597{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0}, Rdata: hex.EncodeToString(b)}}
}

// acked records the client's ack of downstream fragments.
func (ss *session) acked(a ack, now time.Time) {
	for _, op := range ss.down {
		if op.id != a.id {
			continue
		}
		for i := range op.frags {
			bit := uint64(1) << i
			if a.mask&(1<<i) != 0 && op.acked&bit == 0 {
				op.acked |= bit
				if !op.sent[i].IsZero() {
					ss.win.answered(op.sent[i], now, op.tries[i] > 1)
				}
			}
		}
		return
	}
}

// fill returns the payload of the next answer, at most max bytes: the
// fragments that were never sent or whose retransmission time has come,
// oldest packet first.
func (ss *session) fill(maxLen int, now time.Time) []byte {
	b := make([]byte, 1, maxLen)
	b[0] = flagVersion
	rto := ss.win.rto()
	keep := ss.down[:0]
	more := false
	for _, op := range ss.down {
		full := uint64(1)<<len(op.frags) - 1
		if op.acked == full || now.After(op.deadline) {
			continue
		}
		keep = append(keep, op)
		for i, f := range op.frags {
			if op.acked&(1<<i) != 0 || (!op.sent[i].IsZero() && now.Sub(op.sent[i]) < rto) {
				continue
			}
			if len(b)+downFragHdr+len(f) > maxLen {
				more = true
				continue
			}
			if op.tries[i] > 0 {
				ss.retx++
			}
			ss.sentFrag++
			op.sent[i] = now
			op.tries[i]++
			b = appendDownFrag(b, &downFrag{id: op.id, idx: uint8(i), count: uint8(len(op.frags)), b: f})
		}
	}
	clear(ss.down[len(keep):])
	ss.down = keep
	if more {
		b[0] |= flagMore
	}
	return b
}

// write queues pkt to the client with session sid.
func (s *serverCore) write(sid uint32, pkt []byte, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[sid]
	if ss == nil || len(ss.down) >= downQueueLen {
		s.stats.txDrops++
		return
	}
	ss.answered = true
	frags := split(pkt, downFragSize)
	ss.down = append(ss.down, &outPacket{id: ss.nextID, frags: frags, sent: make([]time.Time, len(frags)),
		tries: make([]uint8, len(frags)), deadline: now.Add(packetDeadline)})
	ss.nextID++
}

// pathStats reports on one session.
func (s *serverCore) pathStats(sid uint32, now time.Time) (transport.PathStats, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[sid]
	if ss == nil {
		return transport.PathStats{}, false
	}
	st := transport.PathStats{QueriesPerSecond: ss.rate.perSecond(now), RTT: ss.win.srtt, Queries: ss.queries}
	if ss.sentFrag > 0 {
		st.Loss = float64(ss.retx) / float64(ss.sentFrag)
	}
	return st, true
}

// rate counts events per second over the last few seconds.
type rate struct {
	sec    int64
	counts [8]uint32
}

func (r *rate) roll(now time.Time) {
	sec := now.Unix()
	if sec-r.sec >= int64(len(r.counts)) {
		clear(r.counts[:])
	} else {
		for t := r.sec + 1; t <= sec; t++ {
			r.counts[t%int64(len(r.counts))] = 0
		}
	}
	if sec > r.sec {
		r.sec = sec
	}
}

func (r *rate) add(now time.Time) {
	r.roll(now)
	r.counts[r.sec%int64(len(r.counts))]++
}

// perSecond is the mean rate over the last complete seconds.
func (r *rate) perSecond(now time.Time) float64 {
	r.roll(now)
	var n uint32
	for i := range r.counts {
		if int64(i) != r.sec%int64(len(r.counts)) {
			n += r.counts[i]
		}
	}
	return float64(n) / float64(len(r.counts)-1)
}
