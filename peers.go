package cab

import (
	"errors"
	"fmt"
	"slices"

	"cab/crypto"
)

// SetPeers replaces the configured peers, for a live reload. A peer whose
// key, name and dialer are unchanged keeps its sessions and loses no frame;
// one that is gone, or changed, goes down (its sessions and MACs are
// forgotten); a new one is added, and a client starts its handshake at
// once. Peers that came in through Allow or AllowAny are left alone unless
// the new configuration names them.
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
	var keep, drop []*peer
	for _, p := range c.peerList() {
		pc, listed := want[p.key]
		switch {
		case p.dynamic && !listed:
			keep = append(keep, p)
		case listed && !p.dynamic && samePeer(pc, p.conf):
			keep = append(keep, p)
			delete(want, p.key)
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
	for _, p := range drop {
		c.retire(p, "removed from the configuration")
	}
	c.kickTimers()
	return added, len(drop), nil
}

// samePeer reports whether two configurations of a peer are the same.
func samePeer(a, b PeerConfig) bool {
	if a.Name != b.Name || a.PublicKey != b.PublicKey || a.Dial != b.Dial || a.Keepalive != b.Keepalive ||
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

// retire takes a peer that SetPeers removed down for good.
func (c *Cable) retire(p *peer, reason string) {
	p.removed.Store(true)
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
		}
	}
	p.hs.prev, p.hs.next, p.hs.nextOld, p.hs.initiator, p.hs.prevInit = nil, nil, nil, nil, nil
	p.hs.mu.Unlock()
	c.fdb.forget(p)
	c.closeOwnPort(p)
}

// peerFor returns the peer with key, or a half-open one (halfopen.go) when
// the configuration allows that key from src, or nil.
func (c *Cable) peerFor(key crypto.PublicKey, src source) *peer {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	p := c.byKey[key]
	if p != nil && !p.dynamic {
		return p
	}
	name, ok := "", false
	switch {
	case c.cfg.Allow != nil:
		name, ok = c.cfg.Allow(key)
	case c.cfg.AllowAny:
		name, ok = key.Short(), true
	}
	if !ok {
		return nil // a dynamic peer no longer allowed gets no new session
	}
	if p != nil {
		return p
	}
	if name == "" {
		name = key.Short()
	}
	return c.halfOpenFor(key, name, src)
}
