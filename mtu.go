package cab

import (
	"cab/bridgeif"
	"cab/crypto"
)

// MTU arithmetic, in one place (DESIGN.md, "MTU"), with a type for each
// unit so that a wire size cannot be passed where a frame size is meant:
//
//	WireMTU  = the conn's largest packet on the path
//	FrameMTU = WireMTU − crypto.Overhead          largest frame in one packet
//	L3MTU    = FrameMTU − 14 (− 4 per VLAN tag)    largest IP packet in that frame
//	MSS      = L3MTU − 40 (IPv4) or − 60 (IPv6)
//
// computed with the worst-case outer header (IPv6 + UDP) so one value fits
// every path. The clamp, fragmentation, path MTU probes and the TAP's
// --mtu auto all use these.
type (
	// WireMTU is the largest packet a conn carries on a path: a UDP
	// payload, a QUIC datagram, a stream frame's body.
	WireMTU int
	// FrameMTU is the largest Ethernet frame, header included, that one
	// packet carries.
	FrameMTU int
	// L3MTU is the largest IP packet in a frame: what a TAP's MTU is.
	L3MTU int
	// MSS is a TCP maximum segment size.
	MSS int
)

const (
	// OuterUDPOverhead is the worst-case outer header of a UDP datagram:
	// IPv6 (40) + UDP (8).
	OuterUDPOverhead = 40 + 8
	// DefaultUnderlayMTU is the MTU assumed of the underlay until measured.
	DefaultUnderlayMTU = 1500

	// defaultWireMTU is the wire MTU of a 1500-byte underlay, assumed until
	// the path says more; minWireMTU the smallest cab uses (IPv4's 576).
	defaultWireMTU WireMTU = DefaultUnderlayMTU - OuterUDPOverhead
	minWireMTU     WireMTU = 576 - OuterUDPOverhead

	ipv4TCPHeaders = 20 + 20 // IPv4 and TCP headers without options
	ipv6TCPHeaders = 40 + 20
	vlanTagLen     = 4
)

// Frame returns the largest frame that fits one packet of w bytes.
func (w WireMTU) Frame() FrameMTU { return FrameMTU(int(w) - crypto.Overhead) }

// Wire returns the packet size that carries a frame of f bytes.
func (f FrameMTU) Wire() WireMTU { return WireMTU(int(f) + crypto.Overhead) }

// L3 returns the largest IP packet in a frame of f bytes with tags VLAN
// tags.
func (f FrameMTU) L3(tags int) L3MTU { return L3MTU(int(f) - ethHeaderLen - vlanTagLen*tags) }

// MSS returns the TCP MSS that fits an IP packet of l bytes.
func (l L3MTU) MSS(ipv6 bool) MSS {
	if ipv6 {
		return MSS(int(l) - ipv6TCPHeaders)
	}
	return MSS(int(l) - ipv4TCPHeaders)
}

// Frame returns the untagged IPv4 frame that carries a full segment of m:
// the frame MTU an explicit --mss-clamp stands for.
func (m MSS) Frame() FrameMTU { return FrameMTU(int(m) + ipv4TCPHeaders + ethHeaderLen) }

// MaxL3MTU is the largest L3 MTU a port's frames allow.
const MaxL3MTU L3MTU = bridgeif.MaxFrame - ethHeaderLen

// MinL3MTU is the smallest L3 MTU cab sets on a TAP (IPv4's 576).
const MinL3MTU L3MTU = 576
