package cab

import (
	"errors"
	"time"

	"cab/transport"
)

// Cookies under load (WireGuard's design). A responder under load answers
// an initiation whose mac1 is good but that has no valid mac2 with a cookie
// reply instead of any Diffie-Hellman; the cookie binds the sender's IP
// address, so only a sender that receives there can come back with mac2.
// Spoofed floods then cost the responder a keyed hash each, and never the
// handshake budget that real clients need. Load is the handshake budget
// more than half spent, or the half-open table more than an eighth full;
// it lasts loadHold after the last sign of it. Only carriers whose addrs
// name a host (transport.Hoster: UDP) take part; the others check the
// sender's address themselves (TCP's handshake, QUIC's Retry, DNS through
// resolvers).
const loadHold = time.Second

// underLoad reports whether the responder asks for cookies at now.
func (c *Cable) underLoad(now int64) bool {
	if c.forceLoad || c.limiter.Busy(now) || c.halfOpenLen() > maxHalfOpen/8 {
		c.loadUntil.Store(now + int64(loadHold))
		return true
	}
	return now < c.loadUntil.Load()
}

// halfOpenLen returns the number of half-open peers.
func (c *Cable) halfOpenLen() int {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return len(c.half.order)
}

// hostBytes returns the IP address of addr, as the cookie binds it, or nil
// for an addr that names no host.
func hostBytes(addr transport.Addr) []byte {
	h, ok := addr.(transport.Hoster)
	if !ok {
		return nil
	}
	return h.Host().Unmap().AsSlice()
}

// askCookie answers initiation msg from addr with a cookie reply when the
// responder is under load and msg has no valid mac2, and reports whether
// it did (then msg is done with).
func (c *Cable) askCookie(conn transport.Conn, addr transport.Addr, msg []byte, now int64) bool {
	ip := hostBytes(addr)
	if ip == nil || !c.underLoad(now) {
		return false
	}
	t := time.Unix(0, now)
	if c.responder.CheckMAC2(msg, ip, t) {
		return false
	}
	reply, err := c.responder.CookieReply(msg, ip, t)
	if err != nil {
		return false
	}
	c.drop(nil, dropCookie)
	conn.WriteBatch([]transport.Packet{{B: reply, Addr: addr}})
	return true
}

// errNoInitiation is a cookie reply for no initiation in flight.
var errNoInitiation = errors.New("no initiation in flight")

// handleCookie takes a cookie reply to an initiation this cable sent, and
// sends the initiation again with mac2.
func (c *Cable) handleCookie(conn transport.Conn, addr transport.Addr, msg []byte, idx uint32, now int64) {
	p := c.pendingPeer(idx)
	if p == nil {
		c.drop(nil, dropNoSession)
		return
	}
	p.hs.mu.Lock()
	h := p.hs.initiation(idx)
	var again []byte
	err := errNoInitiation
	if h != nil {
		again, err = h.ConsumeCookieReply(msg, time.Unix(0, now))
	}
	p.hs.mu.Unlock()
	if err != nil {
		c.drop(p, dropAuth)
		return
	}
	c.log.Debug("cookie reply: initiation sent again with mac2", "peer", p.name(), "addr", addr.String())
	conn.WriteBatch([]transport.Packet{{B: again, Addr: addr}})
}
