package cab

import (
	"sync"

	"cab/bridgeif"
)

// carrierState drives the port's carrier (Config.Carrier): on while at
// least one peer is up, off otherwise, as a real cable's link light.
type carrierState struct {
	mu     sync.Mutex       // guards the following fields, and orders the SetCarrier calls
	port   bridgeif.Carrier // nil: the cable leaves the carrier alone
	peers  int              // peers up
	on     bool             // the carrier as last set
	failed bool             // SetCarrier failed: the carrier is left alone from then on
}

// startCarrier takes the port's carrier down, when the cable follows the
// peers with it, before any peer is up.
func (c *Cable) startCarrier() {
	cr, ok := c.port.(bridgeif.Carrier)
	if !ok || !c.cfg.carrierFollows() {
		return
	}
	c.carrier.mu.Lock()
	defer c.carrier.mu.Unlock()
	c.carrier.port = cr
	c.carrier.on = true // a port opens with carrier
	c.setCarrierLocked(c.carrier.peers > 0, "no peer up", "")
}

// peerUpChanged counts a peer that went up or down and moves the carrier
// with the first peer up and the last peer down.
func (c *Cable) peerUpChanged(p *peer, up bool) {
	c.carrier.mu.Lock()
	defer c.carrier.mu.Unlock()
	if up {
		c.carrier.peers++
	} else {
		c.carrier.peers--
	}
	if c.carrier.port == nil || c.carrier.failed || c.closing.Load() {
		return
	}
	reason := "first peer up"
	if !up {
		reason = "last peer down"
	}
	c.setCarrierLocked(c.carrier.peers > 0, reason, p.name())
}

// setCarrierLocked sets the carrier to on, when it is not already, and
// logs it. c.carrier.mu must be held.
func (c *Cable) setCarrierLocked(on bool, reason, peerName string) {
	if c.carrier.on == on {
		return
	}
	if err := c.carrier.port.SetCarrier(on); err != nil {
		if !c.closing.Load() {
			c.carrier.failed = true
			c.log.Warn("cannot set the port's carrier; it is left as it is from now on", "err", err)
		}
		return
	}
	c.carrier.on = on
	msg := "carrier down"
	if on {
		msg = "carrier up"
	}
	if peerName == "" {
		c.log.Info(msg, "reason", reason)
		return
	}
	c.log.Info(msg, "reason", reason, "peer", peerName)
}

// carrierStatus returns the carrier as the cable last set it, "up" or
// "down", or "" when the cable leaves the carrier alone.
func (c *Cable) carrierStatus() string {
	c.carrier.mu.Lock()
	defer c.carrier.mu.Unlock()
	switch {
	case c.carrier.port == nil || c.carrier.failed:
		return ""
	case c.carrier.on:
		return "up"
	}
	return "down"
}
