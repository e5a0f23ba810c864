package bridgeif

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// A TAP with offloads (IFF_VNET_HDR) puts a virtio_net_hdr in front of every
// frame. Reading, the kernel may hand over a TCP or UDP "super-frame" of up
// to 64 KiB that still has to be cut into segments (TSO, USO), or a frame
// whose checksum is only partly computed. Writing, cab may hand the kernel
// consecutive TCP segments of one flow glued into one super-frame, which the
// kernel's stack takes in one piece (the receive side of GRO). The functions
// here are pure: segment and coalesce work on byte slices and are fuzzed.

// vnetHdrLen is the size of struct virtio_net_hdr, the header a TAP with
// IFF_VNET_HDR reads and writes in front of each frame.
const vnetHdrLen = 10

// virtio_net_hdr flags and GSO types (linux/virtio_net.h).
const (
	vnetNeedsCsum = 1 // the checksum at csumStart+csumOffset is to be completed

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

// maxSuperFrame bounds a super-frame: the largest IP packet and its
// Ethernet header with two VLAN tags.
const maxSuperFrame = 65535 + 14 + 8

// vnetHdr is a decoded virtio_net_hdr (host byte order, little-endian on
// every platform cab offloads on).
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.LittleEndian.Uint16(b[2:])
	h.gsoSize = binary.LittleEndian.Uint16(b[4:])
	h.csumStart = binary.LittleEndian.Uint16(b[6:])
	h.csumOffset = binary.LittleEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
}

var errOffload = errors.New("malformed offload frame")

// checksumAdd adds b to the ones' complement sum (RFC 1071), 8 bytes at a
// time with end-around carry.
func checksumAdd(sum uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b), c)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[8:]), c)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[16:]), c)
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		sum, c = bits.Add64(sum, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	sum, c = bits.Add64(sum, 0, c)
	sum += c
	if len(b) >= 4 {
		sum, c = bits.Add64(sum, uint64(binary.BigEndian.Uint32(b)), 0)
		sum += c
		b = b[4:]
	}
	if len(b) >= 2 {
		sum, c = bits.Add64(sum, uint64(binary.BigEndian.Uint16(b)), 0)
		sum += c
		b = b[2:]
	}
	if len(b) == 1 {
		sum, c = bits.Add64(sum, uint64(b[0])<<8, 0)
		sum += c
	}
	return sum
}

// checksumFold folds a 64-bit ones' complement sum to 16 bits.
func checksumFold(sum uint64) uint16 {
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 32) + (sum & 0xffffffff)
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	return uint16(sum)
}

// pseudoSum is the sum of the TCP/UDP pseudo-header of an IPv4 (v6 false)
// or IPv6 packet whose network header is ip, for an L4 length of l4len.
func pseudoSum(ip []byte, v6 bool, proto uint8, l4len int) uint64 {
	var sum uint64
	if v6 {
		sum = checksumAdd(0, ip[8:40])
	} else {
		sum = checksumAdd(0, ip[12:20])
	}
	return sum + uint64(proto) + uint64(l4len)
}

// l3Offset returns where the network header of an Ethernet frame starts
// (after up to two VLAN tags) and whether it is IPv6; ok is false for a
// frame that is neither IPv4 nor IPv6.
func l3Offset(f []byte) (off int, v6, ok bool) {
	off = 12
	for range 3 {
		if len(f) < off+2 {
			return 0, false, false
		}
		switch binary.BigEndian.Uint16(f[off:]) {
		case 0x8100, 0x88a8:
			off += 4
			continue
		case 0x0800:
			return off + 2, false, len(f) >= off+2+20 && f[off+2]>>4 == 4
		case 0x86dd:
			return off + 2, true, len(f) >= off+2+40 && f[off+2]>>4 == 6
		}
		return 0, false, false
	}
	return 0, false, false
}

// completeChecksum finishes a checksum the kernel left partial
// (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at start+offset holds the
// pseudo-header sum, and the checksum covers everything from start on.
func completeChecksum(f []byte, start, offset int) error {
	if start < 14 || offset < 0 || start+offset+2 > len(f) {
		return errOffload
	}
	field := f[start+offset:]
	sum := ^checksumFold(checksumAdd(0, f[start:]))
	if sum == 0 && offset == 6 { // UDP sends a computed 0 as all ones
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(field, sum)
	return nil
}

// segmenter cuts a super-frame read from a TAP into frames of at most one
// segment each. Only ReadBatch uses it, one segment at a time, so that a
// super-frame may span calls.
type segmenter struct {
	f       []byte // the super-frame
	l3, l4  int    // offsets of the network and transport headers
	hl      int    // offset of the payload
	v6, udp bool
	size    int // payload bytes per segment
	pos     int // payload offset of the next segment
	seq     uint32
	id      uint16 // IPv4 identification of the first segment
	i       int    // index of the next segment
}

// start prepares f, read with h, for next. Frames that need no segmenting
// (gsoNone) are left to the caller.
func (s *segmenter) start(h vnetHdr, f []byte) error {
	*s = segmenter{}
	if h.gsoSize == 0 {
		return errOffload
	}
	l3, v6, ok := l3Offset(f)
	if !ok {
		return errOffload
	}
	s.f, s.l3, s.v6, s.size = f, l3, v6, int(h.gsoSize)
	switch h.gsoType &^ gsoECN {
	case gsoTCPv4, gsoTCPv6:
		if v6 != (h.gsoType&^gsoECN == gsoTCPv6) {
			return errOffload
		}
	case gsoUDPL4:
		s.udp = true
	default:
		return errOffload
	}
	// The transport header is where the kernel says the checksum starts;
	// for IPv4 it must follow the IP header exactly.
	s.l4 = int(h.csumStart)
	if v6 {
		if s.l4 < l3+40 || f[l3+6] != protoOf(s.udp) && s.l4 == l3+40 {
			return errOffload
		}
	} else {
		if ihl := int(f[l3]&0xf) * 4; ihl < 20 || s.l4 != l3+ihl || f[l3+9] != protoOf(s.udp) {
			return errOffload
		}
		s.id = binary.BigEndian.Uint16(f[l3+4:])
	}
	if s.udp {
		s.hl = s.l4 + 8
	} else {
		if len(f) < s.l4+20 {
			return errOffload
		}
		s.hl = s.l4 + int(f[s.l4+12]>>4)*4
		if s.hl < s.l4+20 {
			return errOffload
		}
	}
	if len(f) <= s.hl {
		return errOffload
	}
	if !s.udp {
		s.seq = binary.BigEndian.Uint32(f[s.l4+4:])
	}
	return nil
}

func protoOf(udp bool) byte {
	if udp {
		return 17
	}
	return 6
}

// done reports whether every segment has been taken.
func (s *segmenter) done() bool { return s.f == nil || s.hl+s.pos >= len(s.f) }

// next writes the next segment, a whole frame with finished checksums, into
// dst and returns its length. It returns 0 when dst is too small (the
// segment is skipped) or when there is none left.
func (s *segmenter) next(dst []byte) int {
	if s.done() {
		return 0
	}
	payload := s.f[s.hl:]
	n := min(s.size, len(payload)-s.pos)
	last := s.pos+n == len(payload)
	total := s.hl + n
	i, pos := s.i, s.pos
	s.i++
	s.pos += n
	if total > len(dst) {
		return 0
	}
	copy(dst, s.f[:s.hl])
	copy(dst[s.hl:], payload[pos:pos+n])
	seg := dst[:total]
	ip := seg[s.l3:]
	l4len := total - s.l4
	if s.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(total-s.l3-40))
	} else {
		ihl := int(ip[0]&0xf) * 4
		binary.BigEndian.PutUint16(ip[2:], uint16(total-s.l3))
		binary.BigEndian.PutUint16(ip[4:], s.id+uint16(i))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^checksumFold(checksumAdd(0, ip[:ihl])))
	}
	l4 := seg[s.l4:]
	var csumAt int
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
		csumAt = 6
	} else {
		binary.BigEndian.PutUint32(l4[4:], s.seq+uint32(pos))
		const fin, psh, cwr = 0x01, 0x08, 0x80
		if !last {
			l4[13] &^= fin | psh
		}
		if i > 0 {
			l4[13] &^= cwr
		}
		csumAt = 16
	}
	l4[csumAt], l4[csumAt+1] = 0, 0
	sum := ^checksumFold(checksumAdd(pseudoSum(ip, s.v6, protoOf(s.udp), l4len), l4))
	if sum == 0 && s.udp {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumAt:], sum)
	return total
}

// tcpSeg describes a frame that may join a coalesced TCP super-frame: an
// IPv4 (no options, not fragmented) or IPv6 (no extension headers) TCP
// segment with data, flags ACK and maybe PSH, untagged or with one 802.1Q
// tag (a frame a VLAN port of a trunk writes). The offsets count from the
// frame's first byte, tag included: the kernel reads the virtio_net_hdr's
// csum_start and hdr_len that way.
type tcpSeg struct {
	v6         bool
	l3, l4, hl int // offsets of the IP header, the TCP header and the payload
	seq        uint32
	psh        bool
}

// parseTCPSeg reports whether f is a frame that can be coalesced.
func parseTCPSeg(f []byte) (tcpSeg, bool) {
	var s tcpSeg
	s.l3 = 14
	if len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == 0x8100 {
		s.l3 = 14 + 4
	}
	if len(f) < s.l3+20+20 {
		return s, false
	}
	ip := f[s.l3:]
	switch binary.BigEndian.Uint16(f[s.l3-2:]) {
	case 0x0800:
		if ip[0] != 0x45 || ip[9] != 6 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return s, false // options, not TCP, or a fragment
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			return s, false
		}
		s.l4 = s.l3 + 20
	case 0x86dd:
		if len(ip) < 40+20 {
			return s, false
		}
		if ip[0]>>4 != 6 || ip[6] != 6 || int(binary.BigEndian.Uint16(ip[4:])) != len(ip)-40 {
			return s, false
		}
		s.v6, s.l4 = true, s.l3+40
	default:
		return s, false
	}
	tcp := f[s.l4:]
	s.hl = s.l4 + int(tcp[12]>>4)*4
	if s.hl < s.l4+20 || s.hl >= len(f) {
		return s, false // no payload
	}
	const ack, psh = 0x10, 0x08
	if fl := tcp[13]; fl&^psh != ack {
		return s, false // SYN, FIN, RST, URG, ECE or CWR, or no ACK
	}
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.psh = tcp[13]&psh != 0
	return s, true
}

// sameFlow reports whether b may follow a in one super-frame: same
// Ethernet header (and tag) and IP header fields (but for length,
// identification and checksum), same ports, acknowledgement and options.
func sameFlow(a []byte, sa tcpSeg, b []byte, sb tcpSeg) bool {
	if sa.v6 != sb.v6 || sa.l3 != sb.l3 || sa.hl != sb.hl {
		return false
	}
	if string(a[:sa.l3]) != string(b[:sb.l3]) {
		return false
	}
	ia, ib := a[sa.l3:], b[sb.l3:]
	if sa.v6 {
		// version, traffic class, flow label; next header, hop limit, addresses
		if string(ia[0:4]) != string(ib[0:4]) || string(ia[6:40]) != string(ib[6:40]) {
			return false
		}
	} else {
		// TOS; flags; TTL, protocol; addresses
		if ia[1] != ib[1] || ia[6] != ib[6] || string(ia[8:10]) != string(ib[8:10]) || string(ia[12:20]) != string(ib[12:20]) {
			return false
		}
	}
	ta, tb := a[sa.l4:sa.hl], b[sb.l4:sb.hl]
	// ports, then acknowledgement, then options; the window may differ
	return string(ta[0:4]) == string(tb[0:4]) && string(ta[8:12]) == string(tb[8:12]) && string(ta[20:]) == string(tb[20:])
}

// superFrame turns dst, which holds a first segment followed by the
// payloads of the segments that join it (payload bytes in all, segments of
// size each but the last), into a super-frame for the kernel, and returns
// the virtio_net_hdr to write with it.
func superFrame(dst []byte, s tcpSeg, size int, psh bool) vnetHdr {
	ip := dst[s.l3:]
	l4len := len(dst) - s.l4
	h := vnetHdr{flags: vnetNeedsCsum, hdrLen: uint16(s.hl), gsoSize: uint16(size), csumStart: uint16(s.l4), csumOffset: 16}
	if s.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(l4len))
		h.gsoType = gsoTCPv6
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^checksumFold(checksumAdd(0, ip[:20])))
		h.gsoType = gsoTCPv4
	}
	tcp := dst[s.l4:]
	if psh {
		tcp[13] |= 0x08
	}
	// The kernel completes the checksum from the pseudo-header sum.
	binary.BigEndian.PutUint16(tcp[16:], checksumFold(pseudoSum(ip, s.v6, 6, l4len)))
	return h
}
