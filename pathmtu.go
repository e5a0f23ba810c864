package cab

import "cab/transport"

// kernelWire returns the wire MTU of pt as the OS knows it: the conn's
// MaxPacket, lowered to the path MTU (interface MTU, ICMP too-big), or to
// what fits a 1500-byte underlay when the OS does not say.
func (c *Cable) kernelWire(pt *path) WireMTU {
	wire := defaultWireMTU
	if pm, ok := pt.conn.(transport.PathMTUer); ok {
		if m := pm.PathMTU(pt.addr); m > 0 {
			wire = WireMTU(m)
		}
	}
	return max(min(wire, WireMTU(pt.conn.MaxPacket())), minWireMTU)
}

// selfProbing reports whether conn confirms its own path MTU.
func selfProbing(conn transport.Conn) bool {
	sp, ok := conn.(transport.SelfProber)
	return ok && sp.ProbesPathMTU()
}

// updateMTU sets p's wire MTU from its path: the conn's MaxPacket, lowered
// to the path MTU that the OS knows (interface MTU, ICMP too-big), or to
// what fits a 1500-byte underlay when the OS does not say.
func (c *Cable) updateMTU(p *peer) {
	pt := p.route.path.Load()
	if pt == nil {
		return
	}
	wire := c.kernelWire(pt)
	p.hs.mu.Lock()
	if l := p.hs.probe.limit; l > 0 && l < wire && !selfProbing(pt.conn) {
		wire = l // a black hole below what the kernel believes
	}
	p.hs.mu.Unlock()
	if old := p.route.wireMTU.Swap(int64(wire)); old != int64(wire) && p.live.up.Load() {
		c.log.Info("path mtu", "peer", p.name(), "wire_mtu", wire)
		c.refreshMinWire()
	}
}

// refreshMinWire sets the cable's smallest wire MTU, which the MSS clamp
// works to, from the peers that are up (defaultWireMTU with none). It runs
// whenever a peer comes up or goes down or its wire MTU changes, not only
// on the timers' tick: a TCP connection opened in the first moments of a
// link over a small path (QUIC before its path MTU discovery, an IPv6
// underlay of 1280) must have its SYN clamped to that path, or all its
// segments are cut into fragments for as long as it lasts.
func (c *Cable) refreshMinWire() {
	minWire := int64(0)
	for _, p := range c.peerList() {
		if w := p.route.wireMTU.Load(); p.live.up.Load() && (minWire == 0 || w < minWire) {
			minWire = w
		}
	}
	if minWire == 0 {
		minWire = int64(defaultWireMTU)
	}
	c.minWire.Store(minWire)
}

// FrameMTU returns the largest frame that crosses to every peer without
// being cut into fragments: the frame MTU of the smallest path.
func (c *Cable) FrameMTU() FrameMTU { return WireMTU(c.minWire.Load()).Frame() }
