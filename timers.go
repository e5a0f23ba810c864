package cab

import (
	"context"
	mrand "math/rand/v2"
	"time"

	"cab/crypto"
)

// timerLoop runs keepalives, handshake retries, rekeys, expiry and aging.
func (c *Cable) timerLoop(ctx context.Context) {
	t := time.NewTicker(tick)
	defer t.Stop()
	lastAge, lastMTU := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		now := time.Now()
		c.lastTick.Store(now.UnixNano())
		for _, p := range c.peerList() {
			c.peerTimers(ctx, p, now)
		}
		if now.Sub(lastAge) >= time.Second {
			lastAge = now
			// The kernel's path MTU (ICMP too-big) is read again every
			// pathMTURecheck; a path change reads it at once. A carrier
			// that finds its own path MTU (QUIC: it grows after the
			// handshake and starts again small when the client's address
			// changes) is read every second.
			recheck := now.Sub(lastMTU) >= pathMTURecheck
			if recheck {
				lastMTU = now
			}
			minWire := int64(0)
			for _, p := range c.peerList() {
				if pt := p.path.Load(); recheck || pt != nil && selfProbing(pt.conn) {
					c.updateMTU(p)
				}
				p.reasm.expire(now.UnixNano(), c, p)
				if w := p.wireMTU.Load(); p.up.Load() && (minWire == 0 || w < minWire) {
					minWire = w
				}
			}
			if minWire == 0 {
				minWire = defaultWireMTU
			}
			c.minWire.Store(minWire)
			c.fdb.age(now.Add(-c.cfg.fdbMaxAge()).UnixNano())
			c.limiter.Prune(now.UnixNano())
		}
	}
}

// peerTimers does what is due for p at now.
func (c *Cable) peerTimers(ctx context.Context, p *peer, now time.Time) {
	if p.removed.Load() {
		return
	}
	nowNs := now.UnixNano()
	cur := p.cur.Load()
	valid := cur != nil && now.Sub(cur.Created()) < crypto.RejectAfterTime
	unanswered := p.unanswered.Load()
	stale := unanswered != 0 && nowNs-unanswered > int64(staleAfter)

	// Expire sessions that can no longer be used.
	c.expire(p, now)

	if p.dial != nil {
		if stale && p.up.Load() {
			c.setUp(p, false, "no answer")
			// Seconds of unanswered packets say more than one unanswered
			// handshake: one more over this transport, then the next.
			p.mu.Lock()
			p.wentStale = true
			p.mu.Unlock()
		}
		need := !valid || stale || now.Sub(cur.Created()) >= crypto.RekeyAfterTime ||
			cur.Sent() >= crypto.RekeyAfterMessages
		p.mu.Lock()
		start := need && !p.dialing && !now.Before(p.nextAttempt) && ctx.Err() == nil
		via := int(p.active.Load())
		if start {
			limit := fallbackAfter
			if p.wentStale {
				limit = 1
			}
			if p.attempts >= limit && len(p.dialers) > 1 {
				// Handshakes over this transport do not complete: try the next.
				via = (via + 1) % len(p.dialers)
				p.active.Store(int32(via))
				p.attempts = 0
				p.wentStale = false
				c.log.Warn("no handshake completes, trying the next transport", "peer", p.name,
					"transport", transportName(p.dialers[via].Conn))
			}
			p.dialing = true
			p.nextAttempt = now.Add(backoff(p.attempts))
			p.attempts++
		} else if via > 0 && valid && !stale && !p.dialing && now.Sub(p.lastPrefer) >= preferRecheck && ctx.Err() == nil {
			// On a fallback: see whether the preferred transport works again.
			start, via = true, 0
			p.dialing = true
			p.lastPrefer = now
		}
		p.mu.Unlock()
		if start {
			go c.initiate(p, via, cur)
		}
		if valid && !stale && nowNs-p.lastSent.Load() >= int64(c.keepaliveOf(p)) {
			c.sendKeepalive(p, nowNs)
		}
	} else if p.up.Load() && nowNs-p.lastRecv.Load() > int64(3*c.keepaliveOf(p)+crypto.RekeyTimeout) {
		c.setUp(p, false, "silent")
	}

	if valid {
		c.probeTimers(p, now)
	}

	// Passive keepalive: answer a peer that sent something, so that it
	// knows the cable is alive, when nothing else has been sent since.
	if valid && p.recvData.Load() && p.lastRecv.Load() > p.lastSent.Load() &&
		nowNs-p.lastSent.Load() >= int64(passiveKeepalive) {
		p.recvData.Store(false)
		c.sendKeepalive(p, nowNs)
		p.unanswered.Store(0) // an answer is not a question
	}
}

// expire forgets p's sessions that are past RejectAfterTime.
func (c *Cable) expire(p *peer, now time.Time) {
	old := func(s *session) bool { return s != nil && now.Sub(s.Created()) >= crypto.RejectAfterTime }
	p.mu.Lock()
	defer p.mu.Unlock()
	if old(p.prev) {
		c.unregister(p.prev.LocalIndex())
		p.prev = nil
	}
	if old(p.nextOld) {
		c.unregister(p.nextOld.LocalIndex())
		p.nextOld = nil
	}
	if old(p.next) {
		c.unregister(p.next.LocalIndex())
		p.next = nil
	}
	if cur := p.cur.Load(); old(cur) {
		c.unregister(cur.LocalIndex())
		p.cur.Store(nil)
	}
}

// backoff returns the wait before handshake attempt n+1: 1s doubling to
// maxBackoff, with ±20 % jitter so that many clients do not retry in step.
func backoff(n int) time.Duration {
	d := time.Second << min(n, 4)
	d = min(d, maxBackoff)
	jitter := time.Duration(mrand.Int64N(int64(d) * 2 / 5))
	return d - d/5 + jitter
}
