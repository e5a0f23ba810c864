package cab

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"

	"cab/crypto"
	"cab/transport"
)

// handshake handles a packet that is not sealedType: a handshake message,
// or something to drop.
func (c *Cable) handshake(conn transport.Conn, pk *transport.Packet, typ byte, idx uint32, ok bool, now int64) {
	switch {
	case !ok:
		c.drop(nil, dropRunt)
	case typ == crypto.TypeInit:
		c.handleInit(conn, pk.Addr, pk.B, now)
	case typ == crypto.TypeResponse:
		c.handleResponse(conn, pk.Addr, pk.B, idx, now)
	case typ == crypto.TypeCookie:
		c.handleCookie(conn, pk.Addr, pk.B, idx, now)
	default:
		c.drop(nil, dropRunt)
	}
}

// handleInit answers a handshake initiation from an allowed peer.
func (c *Cable) handleInit(conn transport.Conn, addr transport.Addr, msg []byte, now int64) {
	pi, p := c.readInit(conn, addr, msg, now)
	if p == nil {
		return
	}
	p.hs.mu.Lock()
	if pi.Timestamp() <= p.hs.lastInitTS {
		p.hs.mu.Unlock()
		c.drop(p, dropHandshakeReplay)
		c.refused(addr, refusedReplay, now, "peer", p.name())
		return
	}
	idx := c.newIndex()
	msg2, cs, err := pi.Respond(p.psk, idx)
	if err != nil {
		p.hs.mu.Unlock()
		c.drop(p, dropAuth)
		return
	}
	p.hs.lastInitTS = pi.Timestamp()
	s := &session{Session: cs, peer: p}
	if p.hs.nextOld != nil {
		c.unregister(p.hs.nextOld.LocalIndex())
	}
	p.hs.nextOld, p.hs.next = p.hs.next, s
	c.register(idx, s)
	p.hs.mu.Unlock()
	p.noteInit(addr)
	c.log.Debug("handshake response sent", "peer", p.name(), "addr", addr.String())
	conn.WriteBatch([]transport.Packet{{B: msg2, Addr: addr}})
}

// readInit checks an initiation from addr and returns it with its peer, or
// drops it, counted and logged (rate-limited) with the reason, and returns
// a nil peer. Only an initiation whose mac1 is right, and under load whose
// mac2 is (cookie.go), costs a Diffie-Hellman.
func (c *Cable) readInit(conn transport.Conn, addr transport.Addr, msg []byte, now int64) (*crypto.PendingInit, *peer) {
	if c.responder == nil {
		c.drop(nil, dropNotAllowed)
		return nil, nil
	}
	if !c.responder.CheckMAC(msg) {
		c.drop(nil, dropAuth)
		c.refused(addr, refusedMAC, now)
		return nil, nil
	}
	src := sourceOf(addr)
	if c.askCookie(conn, addr, msg, now) {
		return nil, nil // under load: the initiator is to come back with mac2
	}
	if !c.limiter.Allow(src, now) {
		c.drop(nil, dropRateLimited)
		c.refused(addr, refusedRate, now)
		return nil, nil
	}
	pi, err := c.responder.ReadInit(msg)
	if err != nil {
		c.drop(nil, dropAuth)
		c.refused(addr, refusedUndecrypt, now)
		return nil, nil
	}
	p, allowed := c.peerFor(pi.Peer(), src)
	switch {
	case p == nil && allowed:
		c.drop(nil, dropNotAllowed)
		c.refused(addr, refusedBusy, now)
	case p == nil:
		c.drop(nil, dropNotAllowed)
		c.refused(addr, refusedKey, now, "key", pi.Peer().Short(), "public_key", pi.Peer().String())
	case p.heldOff(addr, now):
		c.drop(p, dropDuplicateKey)
		c.refused(addr, refusedDuplicate, now, "peer", p.name(), "key", p.key.Short())
		p = nil
	}
	return pi, p
}

// handleResponse completes a handshake this cable initiated.
func (c *Cable) handleResponse(conn transport.Conn, addr transport.Addr, msg []byte, idx uint32, now int64) {
	p := c.pendingPeer(idx)
	if p == nil {
		c.drop(nil, dropNoSession)
		return
	}
	p.hs.mu.Lock()
	h := p.hs.initiation(idx)
	if h == nil {
		p.hs.mu.Unlock()
		c.drop(p, dropNoSession)
		return
	}
	cs, err := h.Consume(msg)
	if err != nil {
		c.badAnswerLocked(p, addr, now)
		p.hs.mu.Unlock()
		c.drop(p, dropAuth)
		return
	}
	s := &session{Session: cs, peer: p}
	c.imu.Lock()
	for _, in := range []*crypto.Initiator{p.hs.initiator, p.hs.prevInit} {
		if in != nil {
			delete(c.pending, in.LocalIndex())
		}
	}
	c.index.Store(idx, s)
	c.imu.Unlock()
	p.hs.initiator, p.hs.prevInit = nil, nil
	p.hs.attempts = 0
	p.hs.wentStale = false
	c.answeredLocked(p)
	c.rotateLocked(p, s)
	p.hs.mu.Unlock()

	p.live.lastRecv.Store(now)
	p.heard(now)
	vouch(conn, addr)
	p.route.path.Store(&path{conn: conn, addr: addr})
	c.noteTransport(p, conn, addr)
	c.updateMTU(p)
	p.stats.handshakes.Add(1)
	p.live.lastHandshake.Store(now)
	c.log.Info("handshake complete", "peer", p.name(), "cipher", cs.Cipher().String(), "addr", addr.String())
	c.setUp(p, true, "")
	c.sendKeepalive(p, now) // confirms the session to the responder
}

// noteTransport makes the dialer over conn p's active one, when p has
// dialers: the transport the peer answers over is the one in use. Of
// several dialers over one conn (endpoints: one UDP socket, several
// servers), it is the one whose last handshake went to addr.
func (c *Cable) noteTransport(p *peer, conn transport.Conn, addr transport.Addr) {
	i := -1
	p.hs.mu.Lock()
	for j, d := range p.dialers {
		if d.Conn != conn {
			continue
		}
		if i < 0 {
			i = j
		}
		if j < len(p.hs.dialAddrs) && p.hs.dialAddrs[j] == addr {
			i = j
			break
		}
	}
	p.hs.mu.Unlock()
	if i < 0 {
		return
	}
	if old := int(p.route.active.Swap(int32(i))); old != i {
		from, to := transportName(p.dialers[old].Conn), transportName(conn)
		if from == to { // endpoints: the same transport to another server
			from, to = strings.TrimSpace(from+" "+p.hs.addrOf(old)), strings.TrimSpace(to+" "+addr.String())
		}
		c.log.Info("transport changed", "peer", p.name(), "from", from, "to", to)
	}
}

// addrOf is where dialer i's last handshake went, or "".
func (h *handshakeState) addrOf(i int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i < len(h.dialAddrs) && h.dialAddrs[i] != nil {
		return h.dialAddrs[i].String()
	}
	return ""
}

// initiate sends a handshake initiation to p over its dialer via, as the
// timers decided when p's current session was seen. It runs on its own
// goroutine because resolving the peer's address may block.
func (c *Cable) initiate(p *peer, via int, seen *session) {
	defer func() {
		p.hs.mu.Lock()
		p.hs.dialing = false
		p.hs.mu.Unlock()
	}()
	d := p.dialers[via]
	addr, err := d.Resolve()
	if err != nil {
		c.log.Warn("handshake: cannot resolve peer", "peer", p.name(), "err", err)
		return
	}
	idx := c.newIndex()
	now := time.Now()
	h, msg1, err := p.hs.jar.NewInitiator(c.cfg.PrivateKey, p.key, p.psk, idx, c.ciphers, now)
	if err != nil {
		c.log.Warn("handshake: cannot initiate", "peer", p.name(), "err", err)
		return
	}
	p.hs.mu.Lock()
	if p.removed.Load() {
		p.hs.mu.Unlock()
		return
	}
	if p.hs.cur.Load() != seen {
		// A handshake completed (the answer to an earlier initiation) since
		// the timers decided on this one: a new initiation now would make
		// the responder drop the session just confirmed.
		p.hs.mu.Unlock()
		return
	}
	if p.hs.prevInit != nil {
		c.imu.Lock()
		delete(c.pending, p.hs.prevInit.LocalIndex())
		c.imu.Unlock()
	}
	p.hs.prevInit, p.hs.initiator = p.hs.initiator, h
	p.noteTryLocked(addr, via, now)
	if len(p.hs.dialAddrs) < len(p.dialers) {
		p.hs.dialAddrs = make([]transport.Addr, len(p.dialers))
	}
	p.hs.dialAddrs[via] = addr
	c.imu.Lock()
	c.pending[idx] = p
	c.imu.Unlock()
	p.hs.mu.Unlock()
	c.log.Debug("handshake initiation sent", "peer", p.name(), "addr", addr.String(), "transport", transportName(d.Conn))
	d.Conn.WriteBatch([]transport.Packet{{B: msg1, Addr: addr}})
}

// newIndex returns a random receiver index not in use.
func (c *Cable) newIndex() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		idx := binary.LittleEndian.Uint32(b[:])
		c.imu.Lock()
		_, used := c.index.Load(idx)
		_, pend := c.pending[idx]
		c.imu.Unlock()
		if !used && !pend && idx != 0 {
			return idx
		}
	}
}

func (c *Cable) register(idx uint32, s *session) {
	c.imu.Lock()
	c.index.Store(idx, s)
	c.imu.Unlock()
}

func (c *Cable) unregister(idx uint32) {
	c.imu.Lock()
	c.index.Delete(idx)
	c.imu.Unlock()
}

// pendingPeer returns the peer whose initiation in flight has local index
// idx, or nil.
func (c *Cable) pendingPeer(idx uint32) *peer {
	c.imu.Lock()
	defer c.imu.Unlock()
	return c.pending[idx]
}

// initiation returns the initiation in flight with local index idx: the
// newest, or the one before, whose answer is still welcome on a slow path.
// h.mu must be held.
func (h *handshakeState) initiation(idx uint32) *crypto.Initiator {
	for _, in := range []*crypto.Initiator{h.initiator, h.prevInit} {
		if in != nil && in.LocalIndex() == idx {
			return in
		}
	}
	return nil
}
