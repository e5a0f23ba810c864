package cab

import (
	"net/netip"

	"cab/crypto"
	"cab/transport"
)

// No lasting state for strangers. A peer that is not configured (one the
// allow file or AllowAny lets in) enters the peer table only when its first
// transport packet after a handshake authenticates: the proof that it holds
// the PSK, which IKpsk2 mixes in from message 2 on. Until then it is
// half-open: a bounded table, fair per source, oldest evicted first, that a
// flood of initiations can churn but never fill for good.
const (
	maxHalfOpen       = 1024 // half-open peers in all
	halfOpenPerSource = 8    // half-open peers per source host
)

// halfOpen is the table of half-open peers; guarded by Cable.pmu.
type halfOpen struct {
	byKey map[crypto.PublicKey]*peer
	order []*peer // oldest first
	bySrc map[source]int
}

// source is who a handshake comes from, for rate limits and the half-open
// table: the host (an IPv4 address, or the /64 of an IPv6 one) when the
// carrier tells it, so that one host's ports share one budget; else the
// addr itself (a stream or QUIC connection, which its carrier caps per
// host).
type source struct {
	host netip.Prefix
	addr transport.Addr
}

// sourceOf returns the source of a packet from a.
func sourceOf(a transport.Addr) source {
	h, ok := a.(transport.Hoster)
	if !ok {
		return source{addr: a}
	}
	ip := h.Host().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	pfx, _ := ip.Prefix(bits)
	return source{host: pfx}
}

// halfOpenFor returns the half-open peer of key from src, making it when
// there is room; nil when src has its share already.
func (c *Cable) halfOpenFor(key crypto.PublicKey, name string, src source) *peer {
	h := &c.half
	if p := h.byKey[key]; p != nil {
		return p
	}
	if h.bySrc[src] >= halfOpenPerSource {
		return nil
	}
	if len(h.order) >= maxHalfOpen {
		c.forgetHalfOpenLocked(h.order[0])
	}
	p := c.newPeer(name, key, nil)
	p.dynamic = true
	p.src = src
	h.byKey[key] = p
	h.order = append(h.order, p)
	h.bySrc[src]++
	return p
}

// removeLocked takes p out of the table. c.pmu must be held.
func (h *halfOpen) removeLocked(p *peer) {
	delete(h.byKey, p.key)
	for i, q := range h.order {
		if q == p {
			h.order = append(h.order[:i], h.order[i+1:]...)
			break
		}
	}
	if h.bySrc[p.src]--; h.bySrc[p.src] <= 0 {
		delete(h.bySrc, p.src)
	}
}

// forgetHalfOpenLocked takes p out of the half-open table and forgets its
// sessions. c.pmu must be held.
func (c *Cable) forgetHalfOpenLocked(p *peer) {
	c.half.removeLocked(p)
	p.hs.mu.Lock()
	for _, s := range []*session{p.hs.next, p.hs.nextOld} {
		if s != nil {
			c.unregister(s.LocalIndex())
		}
	}
	p.hs.next, p.hs.nextOld = nil, nil
	p.hs.mu.Unlock()
}

// promote moves half-open p into the peer table, now that a packet of its
// session authenticated. When the table is full, the dynamic peer heard
// from least recently gives way; a peer listed by key never does. It
// returns false when p is no longer half-open (evicted meanwhile, or its
// key configured since): then it must not come up.
func (c *Cable) promote(p *peer) bool {
	c.pmu.Lock()
	if c.half.byKey[p.key] != p || c.byKey[p.key] != nil {
		c.pmu.Unlock()
		return false
	}
	c.half.removeLocked(p)
	var evict *peer
	list := c.peerList()
	if len(c.byKey) >= c.cfg.maxPeers() {
		for _, q := range list {
			if q.dynamic && (evict == nil || q.live.lastRecv.Load() < evict.live.lastRecv.Load()) {
				evict = q
			}
		}
		if evict == nil { // all listed by key
			c.pmu.Unlock()
			return false
		}
		delete(c.byKey, evict.key)
	}
	keep := make([]*peer, 0, len(list)+1)
	for _, q := range list {
		if q != evict {
			keep = append(keep, q)
		}
	}
	c.byKey[p.key] = p
	keep = append(keep, p)
	c.peers.Store(&keep)
	c.pmu.Unlock()
	if evict != nil {
		c.retire(evict, "evicted: the peer table is full")
	}
	return true
}

// admitted reports whether p is in the peer table.
func (c *Cable) admitted(p *peer) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.byKey[p.key] == p
}
