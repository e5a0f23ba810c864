package cab

import (
	"encoding/binary"
	"time"

	"cab/crypto"
	"cab/transport"
)

// Packetization-layer path MTU discovery (RFC 8899, simplified). The wire
// MTU starts at what the kernel knows of the path (its route MTU, lowered
// by ICMP too-big). That is optimistic where ICMP is filtered: a black
// hole. So each side probes its peer with a padded TypeProbe packet of the
// wire MTU it uses; the peer answers with a 3-byte TypeProbe. Three
// unanswered probes step the size down through probeSizes until one is
// answered; an answered size is kept and searched again after
// probeRecheck. The plaintext of a probe is
//
//	kind (1: request, 2: answer) | size (2, big endian) | zero padding
const (
	probeRequest  = 1
	probeAnswer   = 2
	probeTimeout  = time.Second
	probeTries    = 3
	probeRecheck  = 10 * time.Minute
	probeMinPlain = 3
)

// probeSizes are the wire sizes tried below the kernel's path MTU: common
// underlays (1500, 1492 PPPoE, 1400, 1280 IPv6 minimum) less the outer
// IPv6+UDP header, and the smallest cab uses.
var probeSizes = []WireMTU{1452, 1444, 1352, 1232, minWireMTU}

// probeState is a peer's path MTU search; guarded by peer.hs.mu.
type probeState struct {
	size      WireMTU   // size being probed; 0: no search under way
	tries     int       // probes of size sent without an answer
	sent      time.Time // when the last probe went
	confirmed WireMTU   // largest size answered; 0: none yet
	checked   time.Time // when the last search ended
	limit     WireMTU   // ceiling on the wire MTU found by probing; 0: none
}

// probeTimers sends the next probe for p, or steps the size down, when due.
func (c *Cable) probeTimers(p *peer, now time.Time) {
	s, pt := p.hs.cur.Load(), p.route.path.Load()
	if s == nil || pt == nil || !p.live.up.Load() || selfProbing(pt.conn) {
		return
	}
	kernel := c.kernelWire(pt)
	p.hs.mu.Lock()
	ps := &p.hs.probe
	switch {
	case ps.size == 0 && (ps.confirmed == 0 || now.Sub(ps.checked) >= probeRecheck || ps.confirmed > kernel):
		ps.size, ps.tries = kernel, 0 // start a search at what the kernel believes
	case ps.size == 0:
		p.hs.mu.Unlock()
		return
	case now.Sub(ps.sent) < probeTimeout:
		p.hs.mu.Unlock()
		return
	case ps.tries >= probeTries: // a black hole at this size: step down
		next := minWireMTU
		for _, sz := range probeSizes {
			if sz < ps.size {
				next = sz
				break
			}
		}
		if next >= ps.size { // nothing smaller to try
			ps.confirmed, ps.size, ps.checked, ps.limit = minWireMTU, 0, now, minWireMTU
			p.hs.mu.Unlock()
			c.updateMTU(p)
			return
		}
		c.log.Info("path mtu probe unanswered", "peer", p.name(), "size", ps.size, "next", next)
		ps.size, ps.tries, ps.limit = next, 0, next // stop sending into the hole meanwhile
		p.hs.mu.Unlock()
		c.updateMTU(p)
		p.hs.mu.Lock()
	}
	size := int(ps.size)
	ps.tries++
	ps.sent = now
	p.hs.mu.Unlock()
	buf := make([]byte, size)
	pl := buf[crypto.HeaderLen : size-crypto.TagLen]
	pl[0] = probeRequest
	binary.BigEndian.PutUint16(pl[1:3], uint16(size))
	pkt, err := s.SealType(crypto.TypeProbe, buf, len(pl))
	if err != nil {
		return
	}
	pt.conn.WriteBatch([]transport.Packet{{B: pkt, Addr: pt.addr}})
}

// handleProbe answers a probe request, or records an answered probe.
func (c *Cable) handleProbe(p *peer, s *session, conn transport.Conn, addr transport.Addr, pl []byte) {
	if len(pl) < probeMinPlain {
		c.drop(p, dropRunt)
		return
	}
	size := WireMTU(binary.BigEndian.Uint16(pl[1:3]))
	switch pl[0] {
	case probeRequest:
		var buf [crypto.Overhead + probeMinPlain]byte
		b := buf[crypto.HeaderLen:]
		b[0] = probeAnswer
		binary.BigEndian.PutUint16(b[1:3], uint16(size))
		if pkt, err := s.SealType(crypto.TypeProbe, buf[:], probeMinPlain); err == nil {
			conn.WriteBatch([]transport.Packet{{B: pkt, Addr: addr}})
		}
	case probeAnswer:
		p.hs.mu.Lock()
		ps := &p.hs.probe
		ok := ps.size != 0 && size == ps.size
		if ok {
			ps.confirmed, ps.size, ps.checked, ps.limit = size, 0, time.Now(), size
		}
		p.hs.mu.Unlock()
		if ok {
			c.updateMTU(p)
		}
	default:
		c.drop(p, dropRunt)
	}
}
