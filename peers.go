package cab

import (
	"errors"
	"fmt"
	"slices"

	"cab/crypto"
)

// SetPeers replaces the configured peers, for a live reload. A peer whose
// key and settings are unchanged keeps its sessions and loses no frame
// (with a new name it is renamed); one that is gone, or changed, is
// removed at once (its sessions, MACs and own port are forgotten, and its
// packets are dropped as not allowed); a new one is added, and a client
// starts its handshake at once. Peers that came in through Allow or
// AllowAny are left alone unless the new configuration names them.
func (c *Cable) SetPeers(peers []PeerConfig) (added, removed int, err error) {
	want := make(map[crypto.PublicKey]PeerConfig, len(peers))
	for _, pc := range peers {
		if pc.PublicKey == (crypto.PublicKey{}) {
			return 0, 0, errors.New("cable: a peer without a public key")
		}
		if _, dup := want[pc.PublicKey]; dup {
			return 0, 0, fmt.Errorf("cable: peer %s listed twice", pc.PublicKey.Short())
		}
		if pc.Name == "" {
			pc.Name = pc.PublicKey.Short()
		}
		want[pc.PublicKey] = pc
	}
	c.pmu.Lock()
	var keep, drop, renamed, moved []*peer
	for _, p := range c.peerList() {
		pc, listed := want[p.key]
		switch {
		case p.dynamic && !listed:
			keep = append(keep, p)
		case listed && !p.dynamic && samePeer(pc, p.conf):
			keep = append(keep, p)
			delete(want, p.key)
			if pc.Name != p.conf.Name {
				p.conf.Name = pc.Name
				renamed = append(renamed, p)
			}
			if !slices.Equal(pc.Segments, p.conf.Segments) {
				p.conf.Segments = pc.Segments
				p.allowed.Store(&pc.Segments)
				moved = append(moved, p)
			}
		default:
			drop = append(drop, p)
			delete(c.byKey, p.key)
		}
	}
	for _, pc := range peers {
		if _, ok := want[pc.PublicKey]; !ok {
			continue // kept
		}
		p := c.configuredPeer(want[pc.PublicKey])
		c.byKey[p.key] = p
		keep = append(keep, p)
		added++
	}
	c.peers.Store(&keep)
	c.pmu.Unlock()
	for _, p := range renamed {
		c.rename(p, p.conf.Name)
	}
	for _, p := range drop {
		c.retire(p, "removed from the configuration")
	}
	for _, p := range moved {
		c.redecide(p)
	}
	c.kickTimers()
	return added, len(drop), nil
}

// samePeer reports whether two configurations of a peer are the same but
// for the name and the segments it may join (which change without a new
// session).
func samePeer(a, b PeerConfig) bool {
	if a.PublicKey != b.PublicKey || a.Dial != b.Dial || a.Keepalive != b.Keepalive ||
		!slices.Equal(a.Fallback, b.Fallback) || !slices.Equal(a.AllowedVLANs, b.AllowedVLANs) ||
		(a.PSK == nil) != (b.PSK == nil) || a.PSK != nil && *a.PSK != *b.PSK ||
		len(a.AllowedMACs) != len(b.AllowedMACs) {
		return false
	}
	for i := range a.AllowedMACs {
		if a.AllowedMACs[i].String() != b.AllowedMACs[i].String() {
			return false
		}
	}
	return true
}

// retire takes p, which is out of the peer table, down for good at once:
// its sessions are forgotten (and packets on them dropped as not allowed
// until they would have expired), and so are its MACs and own port.
func (c *Cable) retire(p *peer, reason string) {
	if p.removed.Swap(true) {
		return
	}
	c.log.Info("peer removed", "peer", p.name(), "key", p.key.Short(), "reason", reason)
	c.setUp(p, false, reason)
	p.hs.mu.Lock()
	c.imu.Lock()
	for _, in := range []*crypto.Initiator{p.hs.initiator, p.hs.prevInit} {
		if in != nil {
			delete(c.pending, in.LocalIndex())
		}
	}
	c.imu.Unlock()
	for _, s := range []*session{p.hs.prev, p.hs.next, p.hs.nextOld, p.hs.cur.Swap(nil)} {
		if s != nil {
			c.unregister(s.LocalIndex())
			c.revoked.Store(s.LocalIndex(), s.Created().Add(crypto.RejectAfterTime).UnixNano())
		}
	}
	p.hs.prev, p.hs.next, p.hs.nextOld, p.hs.initiator, p.hs.prevInit = nil, nil, nil, nil, nil
	p.hs.mu.Unlock()
	c.forgetMACs(p)
	c.closeOwnPort(p)
}

// pruneRevoked forgets the indexes of retired sessions that have expired
// by now.
func (c *Cable) pruneRevoked(now int64) {
	c.revoked.Range(func(k, v any) bool {
		if v.(int64) <= now {
			c.revoked.Delete(k)
		}
		return true
	})
}

// recheckAllowed asks Config.Allow again about every peer it let in: a key
// it no longer allows is removed at once, and a new name renames the peer.
// It runs on every tick of the timer loop, so that an edit of the allow
// file takes effect within a second. Allow may read a file, so it is
// asked without c.pmu held.
func (c *Cable) recheckAllowed() {
	if c.cfg.Allow == nil {
		return
	}
	c.pmu.Lock()
	half := append([]*peer(nil), c.half.order...)
	c.pmu.Unlock()
	var gone, goneHalf []*peer
	for _, p := range c.peerList() {
		if !p.dynamic {
			continue
		}
		name, ok := c.cfg.Allow(p.key)
		switch {
		case !ok:
			gone = append(gone, p)
		case name == "":
			c.rename(p, p.key.Short())
		default:
			c.rename(p, name)
		}
		if ok && c.refreshAllowed(p) {
			c.redecide(p)
		}
	}
	for _, p := range half {
		if _, ok := c.cfg.Allow(p.key); !ok {
			goneHalf = append(goneHalf, p)
		}
	}
	if len(gone)+len(goneHalf) == 0 {
		return
	}
	c.pmu.Lock()
	for _, p := range goneHalf {
		if c.half.byKey[p.key] == p {
			c.forgetHalfOpenLocked(p)
		}
	}
	var removed []*peer
	keep := make([]*peer, 0, len(c.peerList()))
	for _, p := range c.peerList() {
		if slices.Contains(gone, p) && c.byKey[p.key] == p {
			delete(c.byKey, p.key)
			removed = append(removed, p)
			continue
		}
		keep = append(keep, p)
	}
	c.peers.Store(&keep)
	c.pmu.Unlock()
	for _, p := range removed {
		c.retire(p, "its key is no longer allowed")
	}
}

// peerFor returns the peer with key, or a half-open one (halfopen.go) when
// the configuration allows that key from src, or nil; allowed reports
// whether the key is allowed (nil and allowed: src has too many half-open
// peers).
func (c *Cable) peerFor(key crypto.PublicKey, src source) (p *peer, allowed bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	p = c.byKey[key]
	if p != nil && !p.dynamic {
		return p, true
	}
	name, ok := "", false
	switch {
	case c.cfg.Allow != nil:
		name, ok = c.cfg.Allow(key)
	case c.cfg.AllowAny:
		name, ok = key.Short(), true
	}
	if !ok {
		return nil, false // a dynamic peer no longer allowed gets no new session
	}
	if p != nil {
		return p, true
	}
	if name == "" {
		name = key.Short()
	}
	return c.halfOpenFor(key, name, src), true
}
