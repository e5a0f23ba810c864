package cab

import (
	"errors"
	"net"
	"time"

	"cab/crypto"
	"cab/transport"
)

// connLoop reads packets from conn, opens them and delivers their frames.
func (c *Cable) connLoop(conn transport.Conn) error {
	ps := make([]transport.Packet, batch)
	for i := range ps {
		ps[i].B = make([]byte, bufSize)
	}
	var del deliveries
	out := c.newOutBatch()
	var sc scratch
	var ob cryptoBatch // the batch's opens
	var fair fairness
	qd, _ := conn.(transport.QueueDelayer)
	for {
		for i := range ps {
			ps[i].B = ps[i].B[:cap(ps[i].B)]
		}
		n, err := conn.ReadBatch(ps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			c.log.Warn("read failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		sc.reset()
		if qd != nil {
			fair.next(qd.QueueDelay())
		}
		c.receiveBatch(conn, ps[:n], &fair, &ob, &out, &sc, &del, time.Now().UnixNano())
		if err := del.flush(c); err != nil {
			return nil
		}
		out.flush()
		del.poll(c)
	}
}

// finishOpens opens the packets queued in ob (spread over the crypto
// workers) and handles them in the order they came, adding what goes to a
// segment's port to del.
func (c *Cable) finishOpens(conn transport.Conn, ps []transport.Packet, ob *cryptoBatch, del *deliveries, out *outBatch, sc *scratch, now int64) {
	if len(ob.opens) == 0 {
		return
	}
	ob.run(c.pool)
	for k := range ob.opens {
		j := &ob.opens[k]
		if seg, b := c.opened(conn, &ps[j.i], j.s, j.frame, j.err, out, sc, now); b != nil {
			del.add(seg, b)
		}
	}
	clear(ob.opens)
	ob.opens = ob.opens[:0]
}

// receiveBatch handles the packets ps read from conn, in order: it opens
// the sealed ones (spread over the crypto workers) that fair admits (nil:
// all), handles handshakes, queues relays and replies on out, and appends
// the buffers to deliver to the segments' ports (the frame at offset
// HeaderLen) to del.
func (c *Cable) receiveBatch(conn transport.Conn, ps []transport.Packet, fair *fairness, ob *cryptoBatch, out *outBatch, sc *scratch, del *deliveries, now int64) {
	for i := range ps {
		pk := &ps[i]
		typ, idx, ok := crypto.ParseHeader(pk.B)
		if ok && sealedType(typ) {
			if s := c.sessionOf(idx, now); s != nil && (fair == nil || fair.admit(c, s.peer, typ, len(pk.B))) {
				ob.opens = append(ob.opens, openJob{i: i, s: s, pkt: pk.B})
			}
			continue
		}
		// A handshake message changes sessions: the packets before it
		// are done first, as they came.
		c.finishOpens(conn, ps, ob, del, out, sc, now)
		c.handshake(conn, pk, typ, idx, ok, now)
	}
	c.finishOpens(conn, ps, ob, del, out, sc, now)
}

// fairness is a conn loop's account of who sends how much while it falls
// behind. While packets wait longer than shedAfter in the carrier's queue,
// the senders above their fair share of a window of fairWindow packets
// (the window's packets divided among its senders) lose data packets
// before they are opened: a share of them that grows with the wait, from
// none at shedAfter to all at maxQueueDelay. So the loss falls on the
// senders of the most, gently while the loop is a little behind (a TCP
// flow backs off) and wholly when it is far behind, and the reading catches
// up at the cost of a header and a lookup per packet dropped. Keepalives
// and probes are always opened, and so are the first minShare data packets
// of every sender in a window: they are how peers know each other alive,
// so no peer is declared down while its packets arrive. The sender of a
// packet is the peer its receiver index names, before it authenticated: a
// forged packet can only be counted against the peer whose index it bears.
type fairness struct {
	delay  time.Duration // how long the batch being handled waited
	shed   float64       // the share of packets over their sender's share dropped
	owed   float64       // drops owed: shed accumulated, spent one drop at a time
	counts map[*peer]int // data packets per sender in this window
	total  int
}

// next starts on a batch that waited delay in the carrier's queue.
func (f *fairness) next(delay time.Duration) {
	f.delay = delay
	f.shed = min(1, max(0, float64(delay-shedAfter)/float64(maxQueueDelay-shedAfter)))
	if f.total >= fairWindow || delay <= shedAfter && f.total > 0 {
		clear(f.counts)
		f.total = 0
	}
}

// admit reports whether a sealed packet of type typ and size bytes that
// names peer p may be opened, and counts the drop when not.
func (f *fairness) admit(c *Cable, p *peer, typ byte, size int) bool {
	if f.delay <= shedAfter || typ == crypto.TypeProbe || size <= crypto.Overhead {
		return true
	}
	if f.counts == nil {
		f.counts = make(map[*peer]int)
	}
	n := f.counts[p] + 1
	f.counts[p] = n
	f.total++
	if n <= minShare || n <= f.total/len(f.counts) {
		return true
	}
	if f.owed += f.shed; f.owed < 1 {
		return true
	}
	f.owed--
	c.drop(p, dropFairShare)
	return false
}

// sealedType reports whether packets of type typ are sealed with a
// session's keys (data, fragments, probes).
func sealedType(typ byte) bool {
	return typ == crypto.TypeData || typ == crypto.TypeFragment || typ == crypto.TypeProbe || typ == crypto.TypeControl
}

// sessionOf returns the usable session with local index idx, or nil (and
// counts the drop).
func (c *Cable) sessionOf(idx uint32, now int64) *session {
	v, _ := c.index.Load(idx)
	s, _ := v.(*session)
	if s == nil {
		if _, ok := c.revoked.Load(idx); ok {
			c.drop(nil, dropNotAllowed) // a session of a peer removed
		} else {
			c.drop(nil, dropNoSession)
		}
		return nil
	}
	if now-s.Created().UnixNano() >= int64(crypto.RejectAfterTime) {
		c.drop(s.peer, dropNoSession)
		return nil
	}
	return s
}

// opened handles packet pk after s.Open(pk.B) returned frame and err: it
// returns the segment and the buffer to deliver to its port (the frame at
// offset HeaderLen), or nil. Four steps: what the packet proves
// (authenticate), which segment the frame is of, whether it may enter
// (admit), and where it goes (forward).
func (c *Cable) opened(conn transport.Conn, pk *transport.Packet, s *session, frame []byte, err error, out *outBatch, sc *scratch, now int64) (*segment, []byte) {
	buf, frame := c.authenticate(conn, pk, s, frame, err, out, sc, now)
	if buf == nil {
		return nil, nil
	}
	p := s.peer
	seg, frame := c.segmentOf(p, crypto.Flags(pk.B), frame)
	if seg == nil || !c.admit(p, seg, frame) {
		return nil, nil
	}
	// A SYN from a peer is clamped here too, to this side's paths: the
	// MSS it carries bounds what the hosts on this side send back, and
	// this side's wire MTU may be the smaller (path MTU discovery ends at
	// different times at the two ends, or the paths differ).
	c.clampSYN(frame, seg)
	if op := p.own.port.Load(); op != nil && seg.id == 0 { // the peer has a port of its own
		op.port.WriteBatch([][]byte{buf[:crypto.HeaderLen+len(frame)]}, crypto.HeaderLen)
		return nil, nil
	}
	return seg, c.forward(p, seg, buf[:crypto.HeaderLen+len(frame)], out, sc, now)
}

// authenticate takes what packet pk, opened with s, proves: the peer is
// alive at that path; a probe is answered, a fragment reassembled, a
// keepalive noted, an ask (FlagAsk) answered on out. It returns the buffer
// holding a whole frame at offset HeaderLen, and that frame, or nil when
// there is no frame to handle.
func (c *Cable) authenticate(conn transport.Conn, pk *transport.Packet, s *session, frame []byte, err error, out *outBatch, sc *scratch, now int64) (buf, whole []byte) {
	p := s.peer
	if err != nil {
		if errors.Is(err, crypto.ErrReplay) {
			c.drop(p, dropReplay)
		} else {
			c.drop(p, dropAuth)
		}
		return nil, nil
	}
	typ := pk.B[0]
	flags := crypto.Flags(pk.B)
	if !c.authenticated(p, s, conn, pk.Addr, now, flags) {
		return nil, nil
	}
	if flags&crypto.FlagAsk != 0 {
		c.answerAsk(p, out, sc, now)
	}
	switch typ {
	case crypto.TypeProbe:
		c.handleProbe(p, s, conn, pk.Addr, frame)
		return nil, nil
	case crypto.TypeControl:
		c.handleControl(p, s, frame, now)
		return nil, nil
	}
	buf = pk.B
	if typ == crypto.TypeFragment {
		w := c.reassemble(p, frame, now)
		if w == nil {
			return nil, nil
		}
		buf = sc.get(len(w))
		frame = buf[crypto.HeaderLen : crypto.HeaderLen+copy(buf[crypto.HeaderLen:], w)]
	}
	if len(frame) == 0 { // keepalive
		if p.dial == nil {
			p.live.recvData.Store(true)
		}
		return nil, nil
	}
	p.live.recvData.Store(true)
	return buf, frame
}

// admit reports whether frame from p may enter the cable in segment seg,
// counting the drop when not.
func (c *Cable) admit(p *peer, seg *segment, frame []byte) bool {
	if len(frame) < ethHeaderLen {
		c.drop(p, dropRunt)
		return false
	}
	p.stats.rxFrames.Add(1)
	p.stats.rxBytes.Add(uint64(len(frame)))
	dst, src := frameKeys(frame)
	if !p.allows(src) || seg.vlansOK != nil && !seg.vlansOK[src.vlan] {
		c.drop(p, dropNotAllowed)
		return false
	}
	if seg.id == 0 && p.own.port.Load() != nil {
		return true
	}
	if seg.port == nil {
		c.drop(p, dropSegment)
		return false
	}
	if c.cfg.DropBPDU && dst.isBPDU() {
		c.drop(p, dropBPDU)
		return false
	}
	return true
}

// forward switches the frame from p at buf[HeaderLen:] within segment seg:
// it learns its source, and returns buf when the frame goes to the
// segment's port, after queueing on out any copies relayed to other peers
// of the segment (split horizon; none when isolated).
func (c *Cable) forward(p *peer, seg *segment, buf []byte, out *outBatch, sc *scratch, now int64) []byte {
	frame := buf[crypto.HeaderLen:]
	dst, src := frameKeys(frame)
	if dst.isBPDU() && bpduTopologyChange(frame) {
		c.topologyChange(seg, now)
	}
	seg.fromPeers.Add(1)
	isolate := seg.isolate(c)
	switch seg.fdb.learn(src, p, now) {
	case overCap:
		c.drop(p, dropMACLimit) // counted; the frame still goes
	case conflict:
		c.drop(p, dropMACConflict)
		return nil
	}
	if to, known := seg.fdb.lookup(dst); known {
		switch {
		case to == nil:
			return buf
		case to == p:
			return nil
		case isolate:
			c.drop(p, dropIsolated)
			return nil
		default:
			c.relay(to, seg, frame, out, sc, now)
			return nil
		}
	}
	if !c.mayFlood(seg, p, now) {
		return nil
	}
	if !isolate {
		b := sc.get(len(frame))
		copy(b[crypto.HeaderLen:], frame)
		c.flood(seg, p, b, len(frame), out, sc, now)
	}
	return buf
}

// relay seals a copy of frame, of segment seg, for peer to.
func (c *Cable) relay(to *peer, seg *segment, frame []byte, out *outBatch, sc *scratch, now int64) {
	b := sc.get(len(frame))
	copy(b[crypto.HeaderLen:], frame)
	c.seal(to, seg, b, len(frame), out, sc, now)
}

// authenticated records that a packet from p opened with s on (conn, addr):
// it confirms a responder's new session, moves the path, and marks the peer
// up. It returns false, having counted the drop, for a packet from a
// second client with p's key that is held off (diagnose.go).
func (c *Cable) authenticated(p *peer, s *session, conn transport.Conn, addr transport.Addr, now int64, flags byte) bool {
	if pt := p.route.path.Load(); pt != nil && pt.conn != conn && len(p.dialers) > 1 {
		// A client with fallbacks moves between transports by handshakes
		// alone: a packet that still comes over the old transport says
		// nothing of whether ours get through there.
	} else if (pt == nil || pt.conn != conn || pt.addr != addr) && !c.movePath(p, pt, conn, addr, now) {
		c.drop(p, dropDuplicateKey)
		return false
	}
	p.live.lastRecv.Store(now)
	if flags&crypto.FlagHeard != 0 {
		// Only a peer that hears us answers our questions: traffic that
		// flows one way only (UDP blocked towards the peer) leaves ours
		// unanswered, and the path goes stale.
		p.heard(now)
	}
	if p.hs.cur.Load() == s {
		// A peer we dial that went down for want of answers is up again
		// only when it says it hears us: its packets alone may flow one
		// way.
		if !p.live.up.Load() && (p.dial == nil || flags&crypto.FlagHeard != 0) {
			// A peer that dials us is up again on its first packet; it
			// gets a fresh DeadAfter to show that it hears us.
			p.heard(now)
			c.setUp(p, true, "")
		}
		return true
	}
	p.hs.mu.Lock()
	confirmed := false
	if p.hs.next == s || p.hs.nextOld == s {
		c.rotateLocked(p, s)
		for _, o := range []*session{p.hs.next, p.hs.nextOld} {
			if o != nil && o != s {
				c.unregister(o.LocalIndex())
			}
		}
		p.hs.next, p.hs.nextOld = nil, nil
		confirmed = true
	}
	p.hs.mu.Unlock()
	if confirmed && p.dynamic && !c.admitted(p) && !c.promote(p) {
		return true // evicted from the half-open table meanwhile
	}
	if confirmed {
		vouch(conn, addr)
		p.heard(now)
		p.stats.handshakes.Add(1)
		p.live.lastHandshake.Store(now)
		c.log.Info("handshake complete", "peer", p.name(), "cipher", s.Cipher().String(), "addr", addr.String())
		c.setUp(p, true, "")
	}
	return true
}

// movePath moves p's path from pt to (conn, addr), when addr is not a
// second client with p's key held off; it reports whether it did.
func (c *Cable) movePath(p *peer, pt *path, conn transport.Conn, addr transport.Addr, now int64) bool {
	if p.heldOff(addr, now) {
		return false
	}
	if pt != nil && c.notePathChange(p, pt.addr, addr, now) == addr {
		return false
	}
	vouch(conn, addr)
	p.route.path.Store(&path{conn: conn, addr: addr})
	c.noteTransport(p, conn, addr)
	c.updateMTU(p)
	if pt != nil {
		c.log.Info("path changed", "peer", p.name(), "addr", addr.String())
	}
	return true
}

// vouch tells conn, when it asks (transport.Authenticator), that a packet
// from addr opened with a session of a completed handshake.
func vouch(conn transport.Conn, addr transport.Addr) {
	if au, ok := conn.(transport.Authenticator); ok {
		au.Authenticated(addr)
	}
}

// rotateLocked makes s p's current session; the current one becomes the
// previous one, still accepted until it expires, and the previous one is
// forgotten. p.hs.mu must be held.
func (c *Cable) rotateLocked(p *peer, s *session) {
	if p.hs.prev != nil {
		c.unregister(p.hs.prev.LocalIndex())
	}
	p.hs.prev = p.hs.cur.Load()
	p.hs.cur.Store(s)
}
