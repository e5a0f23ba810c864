package cab

import (
	"context"
	mrand "math/rand/v2"
	"time"

	"cab/crypto"
)

// timerLoop runs keepalives, handshake retries, rekeys, expiry and aging.
func (c *Cable) timerLoop(ctx context.Context) {
	t := time.NewTicker(c.tick())
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
		c.recheckAllowed()
		for _, p := range c.peerList() {
			c.peerTimers(ctx, p, now)
			c.joinTimer(p, now.UnixNano())
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
			for _, p := range c.peerList() {
				if pt := p.route.path.Load(); recheck || pt != nil && selfProbing(pt.conn) {
					c.updateMTU(p)
				}
				p.route.reasm.expire(now.UnixNano(), &c.dropper, p)
			}
			c.refreshMinWire()
			for _, seg := range c.allSegments() {
				seg.fdb.age(now.Add(-c.cfg.fdbMaxAge()).UnixNano(), c.cfg.fdbMaxAge())
			}
			c.summarise(now.UnixNano())
			c.pruneRevoked(now.UnixNano())
			c.limiter.Prune(now.UnixNano())
		}
	}
}

// tick returns the timer loop's period: tick, or a sixth of
// Config.DeadAfter when that is shorter.
func (c *Cable) tick() time.Duration {
	if d := c.cfg.DeadAfter / 6; d > 0 && d < tick {
		return d
	}
	return tick
}

// peerTimers does what is due for p at now.
func (c *Cable) peerTimers(ctx context.Context, p *peer, now time.Time) {
	if p.removed.Load() {
		return
	}
	nowNs := now.UnixNano()
	cur := p.hs.cur.Load()
	valid := cur != nil && now.Sub(cur.Created()) < crypto.RejectAfterTime
	unanswered := p.live.unanswered.Load()
	stale := unanswered != 0 && nowNs-unanswered > int64(staleAfter)
	dead := c.cfg.DeadAfter
	if dead > 0 {
		// Fast failure detection: the peer is asked after a third of
		// DeadAfter of silence (below), and it is dead when it has said
		// nothing that shows it hears us for DeadAfter while we asked.
		stale = unanswered != 0 && nowNs-p.live.lastHeard.Load() > int64(dead)
	}

	// Expire sessions that can no longer be used.
	c.expire(p, now)

	if p.dial != nil {
		c.dialerTimers(ctx, p, cur, valid, stale, now)
	} else if p.live.up.Load() && (nowNs-p.live.lastRecv.Load() > int64(3*c.keepaliveOf(p)+crypto.RekeyTimeout) || dead > 0 && stale) {
		c.setUp(p, false, "silent")
	}

	if dead > 0 && valid && p.live.up.Load() {
		c.askTimers(p, nowNs)
	}

	if valid {
		c.probeTimers(p, now)
	}

	// Passive keepalive: answer a peer that sent something, so that it
	// knows the cable is alive, when nothing else has been sent since.
	if valid && p.live.recvData.Load() && p.live.lastRecv.Load() > p.live.lastSent.Load() &&
		nowNs-p.live.lastSent.Load() >= int64(passiveKeepalive) {
		p.live.recvData.Store(false)
		c.sendKeepalive(p, nowNs)
		p.live.unanswered.Store(0) // an answer is not a question
	}
}

// askTimers is fast failure detection (Config.DeadAfter): it asks p, an
// up peer that has said nothing for a third of DeadAfter, and again every
// sixth until it answers (at once) or is dead: three or four asks go
// unanswered before it is. A responder whose peer asks too leaves the
// asking to it, and asks only after half of DeadAfter, when the peer's
// asks stop coming: so with both ends set alike an idle link carries one
// ask and one answer at a time. A link with traffic both ways carries no
// asks.
func (c *Cable) askTimers(p *peer, nowNs int64) {
	dead := c.cfg.DeadAfter
	askAfter := dead / 3
	if p.dial == nil && nowNs-p.live.lastAnswer.Load() < int64(dead) {
		askAfter = dead / 2
	}
	if nowNs-p.live.lastHeard.Load() >= int64(askAfter) && nowNs-p.live.lastAsk.Load() >= int64(dead/6) {
		p.live.lastAsk.Store(nowNs)
		c.sendKeepaliveFlags(p, nowNs, crypto.FlagAsk)
	}
}

// dialerTimers does what is due at now for p, a peer this cable dials,
// whose current session is cur (valid: still usable; stale: its packets
// go unanswered): it takes p down when stale, starts a handshake when one
// is needed (moving to the next transport when they do not complete, and
// back to the preferred one when it works again), and sends keepalives.
func (c *Cable) dialerTimers(ctx context.Context, p *peer, cur *session, valid, stale bool, now time.Time) {
	if stale && p.live.up.Load() {
		c.setUp(p, false, "no answer")
		// Seconds of unanswered packets say more than one unanswered
		// handshake: one more over this transport, then the next.
		p.hs.mu.Lock()
		p.hs.wentStale = true
		p.hs.mu.Unlock()
	}
	need := !valid || stale || now.Sub(cur.Created()) >= crypto.RekeyAfterTime ||
		cur.Sent() >= crypto.RekeyAfterMessages
	p.hs.mu.Lock()
	start := need && !p.hs.dialing && !now.Before(p.hs.nextAttempt) && ctx.Err() == nil
	via := int(p.route.active.Load())
	if start {
		via = c.nextTransportLocked(p, via)
		p.hs.dialing = true
		p.hs.nextAttempt = now.Add(backoff(p.hs.attempts))
		p.hs.attempts++
	} else if via > 0 && valid && !stale && !p.hs.dialing && now.Sub(p.hs.lastPrefer) >= preferRecheck && ctx.Err() == nil {
		// On a fallback: see whether the preferred transport works again.
		start, via = true, 0
		p.hs.dialing = true
		p.hs.lastPrefer = now
	}
	w, warn := p.noAnswerDueLocked(now)
	p.hs.mu.Unlock()
	if start {
		go c.initiate(p, via, cur)
	}
	if warn {
		c.diagWG.Add(1)
		go func() {
			defer c.diagWG.Done()
			c.warnNoAnswer(p, w)
		}()
	}
	if nowNs := now.UnixNano(); valid && !stale && nowNs-p.live.lastSent.Load() >= int64(c.keepaliveOf(p)) {
		c.sendKeepalive(p, nowNs)
	}
}

// nextTransportLocked returns the dialer to try the next handshake with:
// via, or the next one when handshakes over via do not complete. p.hs.mu
// must be held.
func (c *Cable) nextTransportLocked(p *peer, via int) int {
	limit := fallbackAfter
	if p.hs.wentStale {
		limit = 1
	}
	if p.hs.attempts < limit || len(p.dialers) < 2 {
		return via
	}
	via = (via + 1) % len(p.dialers)
	p.route.active.Store(int32(via))
	p.hs.attempts = 0
	p.hs.wentStale = false
	c.log.Warn("no handshake completes, trying the next transport", "peer", p.name(),
		"transport", transportName(p.dialers[via].Conn))
	return via
}

// expire forgets p's sessions that are past RejectAfterTime.
func (c *Cable) expire(p *peer, now time.Time) {
	old := func(s *session) bool { return s != nil && now.Sub(s.Created()) >= crypto.RejectAfterTime }
	p.hs.mu.Lock()
	defer p.hs.mu.Unlock()
	if old(p.hs.prev) {
		c.unregister(p.hs.prev.LocalIndex())
		p.hs.prev = nil
	}
	if old(p.hs.nextOld) {
		c.unregister(p.hs.nextOld.LocalIndex())
		p.hs.nextOld = nil
	}
	if old(p.hs.next) {
		c.unregister(p.hs.next.LocalIndex())
		p.hs.next = nil
	}
	if cur := p.hs.cur.Load(); old(cur) {
		c.unregister(cur.LocalIndex())
		p.hs.cur.Store(nil)
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
