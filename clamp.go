package cab

import (
	"encoding/binary"
)

// IP protocol numbers and ethertypes the clamp looks at.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	protoTCP      = 6
	tcpFlagSYN    = 0x02
	tcpOptEnd     = 0
	tcpOptNOP     = 1
	tcpOptMSS     = 2
)

// clampMSS lowers the MSS option of a TCP SYN (or SYN-ACK) in frame so that
// the segments of the connection fit in frames of frameMTU bytes. It
// handles IPv4 and IPv6 (with extension headers), untagged, 802.1Q and
// QinQ frames, and fixes the TCP checksum incrementally (RFC 1624). It
// never changes the frame's length and reports whether it changed the
// frame. Anything it does not understand is left alone.
func clampMSS(frame []byte, frameMTU FrameMTU) bool {
	off, tags := ethHeaderLen, 0
	if len(frame) < ethHeaderLen {
		return false
	}
	etype := binary.BigEndian.Uint16(frame[12:14])
	for (etype == etherTypeVLAN || etype == etherTypeQinQ) && tags < 2 {
		if len(frame) < off+4 {
			return false
		}
		etype = binary.BigEndian.Uint16(frame[off+2 : off+4])
		off += 4
		tags++
	}
	tcp, mss := tcpSegment(frame[off:], etype, frameMTU.L3(tags))
	if len(tcp) < 20 || tcp[13]&tcpFlagSYN == 0 || mss <= 0 {
		return false
	}
	return lowerMSS(tcp, mss)
}

// tcpSegment returns the TCP segment in the IP packet ip of ethertype
// etype, and the MSS that fits l3, or nil when ip holds no first segment
// of a TCP connection that the clamp understands.
func tcpSegment(ip []byte, etype uint16, l3 L3MTU) (tcp []byte, mss MSS) {
	switch etype {
	case etherTypeIPv4:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return nil, 0
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || total < ihl || total > len(ip) || ip[9] != protoTCP {
			return nil, 0
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 { // not the first fragment
			return nil, 0
		}
		return ip[ihl:total], l3.MSS(false)
	case etherTypeIPv6:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return nil, 0
		}
		end := 40 + int(binary.BigEndian.Uint16(ip[4:6]))
		if end > len(ip) {
			return nil, 0
		}
		next, p := ip[6], 40
		for next != protoTCP { // walk the extension headers
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if p+2 > end {
					return nil, 0
				}
				next, p = ip[p], p+(int(ip[p+1])+1)*8
			default: // fragments (44) and everything else: leave alone
				return nil, 0
			}
			if p > end {
				return nil, 0
			}
		}
		return ip[p:end], l3.MSS(true)
	}
	return nil, 0
}

// lowerMSS lowers the MSS option of the TCP SYN segment tcp to mss, fixing
// the checksum, and reports whether it changed anything.
func lowerMSS(tcp []byte, mss MSS) bool {
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return false
	}
	opts := tcp[20:doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case tcpOptEnd:
			return false
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == tcpOptMSS && opts[i+1] == 4 {
			old := binary.BigEndian.Uint16(opts[i+2 : i+4])
			if MSS(old) <= mss {
				return false
			}
			binary.BigEndian.PutUint16(opts[i+2:i+4], uint16(mss))
			// The MSS option starts at an even offset or not: the
			// checksum is over 16-bit words of the segment.
			fixChecksum(tcp[16:18], tcp, 20+i+2, old, uint16(mss))
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

// fixChecksum updates the ones' complement checksum at sum for a 16-bit
// value at byte offset at of seg changing from old to new (RFC 1624,
// eqn. 3). A value at an odd offset straddles two checksum words, which
// is the same as a byte-swapped word.
func fixChecksum(sum, seg []byte, at int, old, new uint16) {
	if at%2 == 1 {
		old, new = old<<8|old>>8, new<<8|new>>8
	}
	hc := uint32(binary.BigEndian.Uint16(sum))
	s := uint32(^hc&0xffff) + uint32(^old) + uint32(new)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(sum, ^uint16(s))
}

// clampSYN lowers the MSS of frame, of segment seg, when it is a TCP SYN,
// to what fits the cable's smallest wire MTU (or the configured clamp),
// and counts it. The cable calls it on frames from its port and on frames
// from peers.
func (c *Cable) clampSYN(frame []byte, seg *segment) {
	if mtu := c.cfg.clampFrameMTU(WireMTU(c.minWire.Load())); mtu > 0 && clampMSS(frame, mtu-seg.trailer()) {
		c.clamped.Add(1)
	}
}
