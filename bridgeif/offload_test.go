package bridgeif

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refChecksum is RFC 1071 written the slow, obvious way.
func refChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%7 == 0 {
			for i := range b {
				b[i] = 0xff // the carries pile up
			}
		}
		if got, want := checksumFold(checksumAdd(0, b)), refChecksum(b); got != want {
			t.Fatalf("len %d: %#04x, want %#04x", n, got, want)
		}
	}
}

// validL4 reports whether the TCP/UDP checksum of an untagged frame is
// right, computed the reference way.
func validL4(t *testing.T, f []byte) bool {
	t.Helper()
	v6 := binary.BigEndian.Uint16(f[12:]) == 0x86dd
	var pseudo []byte
	var l4 []byte
	var proto byte
	if v6 {
		proto, l4 = f[20], f[54:]
		pseudo = append(append([]byte{}, f[22:54]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	} else {
		ihl := int(f[14]&0xf) * 4
		if refChecksum(f[14:14+ihl]) != 0xffff {
			t.Errorf("bad IPv4 header checksum")
		}
		proto, l4 = f[23], f[14+ihl:]
		pseudo = append(append([]byte{}, f[26:34]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	}
	return refChecksum(append(pseudo, l4...)) == 0xffff
}

// tcpFrame builds an untagged TCP frame with a valid checksum.
func tcpFrame(v6 bool, seq uint32, id uint16, flags byte, opts, payload []byte) []byte {
	f := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}
	if v6 {
		f[12], f[13] = 0x86, 0xdd
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, 6, 64
		copy(ip[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
		copy(ip[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
		f = append(f, ip...)
	} else {
		ip := make([]byte, 20)
		ip[0], ip[6], ip[8], ip[9] = 0x45, 0x40, 64, 6
		binary.BigEndian.PutUint16(ip[4:], id)
		copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
		f = append(f, ip...)
	}
	tcp := make([]byte, 20+len(opts))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12] = byte((20 + len(opts)) / 4 << 4)
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	copy(tcp[20:], opts)
	f = append(append(f, tcp...), payload...)
	fixLengths(f)
	return f
}

// fixLengths sets the IP length and every checksum of an untagged frame.
func fixLengths(f []byte) {
	ip := f[14:]
	v6 := binary.BigEndian.Uint16(f[12:]) == 0x86dd
	l4 := 34
	if v6 {
		l4 = 54
		binary.BigEndian.PutUint16(ip[4:], uint16(len(f)-54))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^refChecksum(ip[:20]))
	}
	at := l4 + 16
	if (v6 && ip[6] == 17) || (!v6 && ip[9] == 17) {
		at = l4 + 6
		binary.BigEndian.PutUint16(f[l4+4:], uint16(len(f)-l4))
	}
	f[at], f[at+1] = 0, 0
	binary.BigEndian.PutUint16(f[at:], ^checksumFold(checksumAdd(pseudoSum(ip, v6, f[map[bool]int{false: 23, true: 20}[v6]], len(f)-l4), f[l4:])))
}

// tagFrame returns f with an 802.1Q tag of vid after its MACs, or f
// itself for vid 0.
func tagFrame(f []byte, vid uint16) []byte {
	if vid == 0 {
		return f
	}
	t := append([]byte(nil), f[:12]...)
	t = binary.BigEndian.AppendUint16(t, 0x8100)
	t = binary.BigEndian.AppendUint16(t, vid)
	return append(t, f[12:]...)
}

func payloadOf(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) + seed
	}
	return p
}

// TestSegmentTCP cuts TSO super-frames, IPv4 and IPv6, and checks every
// segment: lengths, sequence numbers, IP ids, flags and checksums, and that
// the payloads put together are the original.
func TestSegmentTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{1, 1000, 1348, 1349, 4000, 60000} {
			payload := payloadOf(n, 3)
			opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
			super := tcpFrame(v6, 1000, 50, 0x10|0x08|0x80, opts, payload)
			l4 := 34
			h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1348, csumStart: 34, csumOffset: 16}
			if v6 {
				l4, h.gsoType, h.csumStart = 54, gsoTCPv6, 54
			}
			var s segmenter
			if err := s.start(h, super); err != nil {
				t.Fatal(err)
			}
			var got []byte
			dst := make([]byte, 2000)
			for i := 0; !s.done(); i++ {
				size := s.next(dst)
				if size == 0 {
					t.Fatalf("v6=%v n=%d: segment %d empty", v6, n, i)
				}
				seg := dst[:size]
				if !validL4(t, seg) {
					t.Fatalf("v6=%v n=%d: segment %d: bad TCP checksum", v6, n, i)
				}
				hl := l4 + 32
				if seq := binary.BigEndian.Uint32(seg[l4+4:]); seq != 1000+uint32(len(got)) {
					t.Fatalf("segment %d: seq %d, want %d", i, seq, 1000+len(got))
				}
				if !v6 {
					if id := binary.BigEndian.Uint16(seg[18:]); id != 50+uint16(i) {
						t.Fatalf("segment %d: IP id %d", i, id)
					}
				}
				last := s.done()
				fl := seg[l4+13]
				if (fl&0x08 != 0) != last || (fl&0x80 != 0) != (i == 0) {
					t.Fatalf("segment %d (last %v): flags %#x", i, last, fl)
				}
				if !last && size-hl != 1348 {
					t.Fatalf("segment %d: %d payload bytes", i, size-hl)
				}
				got = append(got, seg[hl:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("v6=%v n=%d: payload differs after segmentation", v6, n)
			}
		}
	}
}

// TestSegmentUDP cuts a USO super-frame.
func TestSegmentUDP(t *testing.T) {
	payload := payloadOf(5000, 9)
	f := tcpFrame(false, 0, 7, 0, nil, nil)[:34]
	f[23] = 17
	f = append(f, make([]byte, 8)...)
	binary.BigEndian.PutUint16(f[34:], 9000)
	binary.BigEndian.PutUint16(f[36:], 53)
	f = append(f, payload...)
	fixLengths(f)
	var s segmenter
	if err := s.start(vnetHdr{gsoType: gsoUDPL4, gsoSize: 1200, csumStart: 34, csumOffset: 6}, f); err != nil {
		t.Fatal(err)
	}
	var got []byte
	dst := make([]byte, 2000)
	for n := 0; !s.done(); n++ {
		size := s.next(dst)
		seg := dst[:size]
		if !validL4(t, seg) || int(binary.BigEndian.Uint16(seg[38:])) != size-34 {
			t.Fatalf("segment %d bad", n)
		}
		got = append(got, seg[42:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload differs")
	}
}

// TestCompleteChecksum finishes a partial checksum as the kernel leaves it.
func TestCompleteChecksum(t *testing.T) {
	f := tcpFrame(false, 5, 1, 0x18, nil, payloadOf(333, 1))
	want := append([]byte(nil), f...)
	binary.BigEndian.PutUint16(f[50:], checksumFold(pseudoSum(f[14:], false, 6, len(f)-34)))
	if err := completeChecksum(f, 34, 16); err != nil || !bytes.Equal(f, want) {
		t.Fatalf("checksum %x, want %x (%v)", f[50:52], want[50:52], err)
	}
	if completeChecksum(f, 34, len(f)) == nil || completeChecksum(f, 2, 16) == nil {
		t.Fatal("out-of-range checksum offsets accepted")
	}
}

// TestCoalesceRoundTrip: segments glued by superFrame and cut again by the
// segmenter come back byte for byte.
func TestCoalesceRoundTrip(t *testing.T) {
	for _, c := range []struct {
		v6  bool
		vid uint16
	}{{false, 0}, {true, 0}, {false, 100}, {true, 4094}} {
		v6 := c.v6
		opts := []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8}
		var segs [][]byte
		seq := uint32(4000)
		for i := range 10 {
			n := 1348
			fl := byte(0x10)
			if i == 9 {
				n, fl = 500, 0x18
			}
			segs = append(segs, tagFrame(tcpFrame(v6, seq, uint16(100+i), fl, opts, payloadOf(n, byte(i))), c.vid))
			seq += uint32(n)
		}
		first, ok := parseTCPSeg(segs[0])
		if !ok {
			t.Fatal("first segment not coalescable")
		}
		// The kernel reads csum_start and hdr_len from the frame's first
		// byte: a tag moves both 4 bytes on.
		l4 := map[bool]int{false: 34, true: 54}[v6]
		if c.vid != 0 {
			l4 += 4
		}
		if first.l4 != l4 || first.hl != l4+20+len(opts) {
			t.Fatalf("v6=%v vlan %d: TCP header at %d, payload at %d; want %d, %d", v6, c.vid, first.l4, first.hl, l4, l4+20+len(opts))
		}
		buf := append([]byte(nil), segs[0]...)
		for _, s := range segs[1:] {
			ps, ok := parseTCPSeg(s)
			if !ok || !sameFlow(segs[0], first, s, ps) {
				t.Fatal("segment of the same flow refused")
			}
			buf = append(buf, s[ps.hl:]...)
		}
		h := superFrame(buf, first, 1348, true)
		var enc [vnetHdrLen]byte
		h.encode(enc[:])
		var back vnetHdr
		back.decode(enc[:])
		if back != h || h.gsoSize != 1348 || int(h.hdrLen) != first.hl || int(h.csumStart) != l4 || h.csumOffset != 16 {
			t.Fatalf("header %+v", back)
		}
		if c.vid != 0 {
			if got, ok := VLANOf(buf); !ok || got != c.vid {
				t.Fatalf("the super-frame lost its tag: VLAN %d %v", got, ok)
			}
		}
		var s segmenter
		if err := s.start(h, buf); err != nil {
			t.Fatal(err)
		}
		dst := make([]byte, 2000)
		for i := 0; !s.done(); i++ {
			size := s.next(dst)
			if !bytes.Equal(dst[:size], segs[i]) {
				t.Fatalf("v6=%v vlan %d: segment %d differs after the round trip", v6, c.vid, i)
			}
		}
	}
}

// TestSameFlowRefuses: frames of other flows, other acknowledgements, other
// options, and segments that cannot be glued are told apart.
func TestSameFlowRefuses(t *testing.T) {
	a := tcpFrame(false, 1, 1, 0x10, nil, payloadOf(100, 0))
	sa, _ := parseTCPSeg(a)
	change := func(at int, v byte) []byte {
		b := append([]byte(nil), a...)
		b[at] = v
		fixLengths(b)
		return b
	}
	for name, b := range map[string][]byte{
		"other MAC":  change(0, 4),
		"other TOS":  change(15, 4),
		"other TTL":  change(22, 9),
		"other addr": change(29, 9),
		"other port": change(35, 9),
		"other ack":  change(42, 9),
		"tagged":     tagFrame(a, 100),
	} {
		sb, ok := parseTCPSeg(b)
		if !ok || sameFlow(a, sa, b, sb) {
			t.Errorf("%s: same flow", name)
		}
	}
	// Frames of two VLANs are two flows, whatever their contents.
	a100, a200 := tagFrame(a, 100), tagFrame(a, 200)
	s100, ok100 := parseTCPSeg(a100)
	s200, ok200 := parseTCPSeg(a200)
	if !ok100 || !ok200 || sameFlow(a100, s100, a200, s200) {
		t.Errorf("VLANs 100 and 200: coalescable %v %v, or the same flow", ok100, ok200)
	}
	for name, b := range map[string][]byte{
		"SYN":     tcpFrame(false, 1, 1, 0x02, nil, payloadOf(10, 0)),
		"FIN":     tcpFrame(false, 1, 1, 0x11, nil, payloadOf(10, 0)),
		"no data": tcpFrame(false, 1, 1, 0x10, nil, nil),
		"UDP":     change(23, 17),
		"runt":    a[:40],
	} {
		if _, ok := parseTCPSeg(b); ok {
			t.Errorf("%s: coalescable", name)
		}
	}
}

// FuzzSegment: any header and frame either is refused or cuts into
// segments that fit their buffers, without panicking, in bounded steps.
func FuzzSegment(f *testing.F) {
	f.Add(uint8(gsoTCPv4), uint16(1348), uint16(34), tcpFrame(false, 1, 1, 0x10, nil, payloadOf(3000, 1)))
	f.Add(uint8(gsoTCPv6), uint16(1000), uint16(54), tcpFrame(true, 1, 1, 0x10, nil, payloadOf(3000, 1)))
	f.Add(uint8(gsoUDPL4), uint16(100), uint16(34), tcpFrame(false, 1, 1, 0x10, nil, payloadOf(300, 1)))
	f.Add(uint8(gsoTCPv4), uint16(1), uint16(34), tcpFrame(false, 1, 1, 0x10, nil, payloadOf(30, 1)))
	f.Fuzz(func(t *testing.T, typ uint8, size, start uint16, frame []byte) {
		var s segmenter
		if s.start(vnetHdr{gsoType: typ, gsoSize: size, csumStart: start, csumOffset: 16}, frame) != nil {
			return
		}
		dst := make([]byte, 1600)
		for i := 0; !s.done(); i++ {
			if i > len(frame) {
				t.Fatal("segmenter does not end")
			}
			if n := s.next(dst); n > len(dst) {
				t.Fatal("segment overflows")
			}
		}
		_ = completeChecksum(frame, int(start), int(size%64))
	})
}

// FuzzCoalesce: parseTCPSeg and sameFlow take any bytes; what they accept
// glues and cuts back into the same payload.
func FuzzCoalesce(f *testing.F) {
	f.Add(tcpFrame(false, 1, 1, 0x10, nil, payloadOf(100, 1)), tcpFrame(false, 101, 2, 0x18, nil, payloadOf(50, 2)))
	f.Add(tcpFrame(true, 1, 1, 0x10, []byte{1, 1, 1, 1}, payloadOf(100, 1)), []byte{})
	f.Add(tagFrame(tcpFrame(false, 1, 1, 0x10, nil, payloadOf(100, 1)), 100), tagFrame(tcpFrame(false, 101, 2, 0x18, nil, payloadOf(50, 2)), 100))
	f.Add(tagFrame(tcpFrame(true, 1, 1, 0x10, nil, payloadOf(100, 1)), 7), tagFrame(tcpFrame(true, 101, 2, 0x10, nil, payloadOf(100, 2)), 7))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		sa, oka := parseTCPSeg(a)
		sb, okb := parseTCPSeg(b)
		if !oka || !okb || !sameFlow(a, sa, b, sb) || len(b)-sb.hl > len(a)-sa.hl || sb.seq != sa.seq+uint32(len(a)-sa.hl) {
			return
		}
		buf := append(append([]byte(nil), a...), b[sb.hl:]...)
		h := superFrame(buf, sa, len(a)-sa.hl, sb.psh)
		var s segmenter
		if err := s.start(h, buf); err != nil {
			t.Fatalf("own super-frame refused: %v", err)
		}
		dst := make([]byte, len(buf))
		var got []byte
		for i := 0; !s.done() && i < 4; i++ {
			n := s.next(dst)
			got = append(got, dst[sa.hl:n]...)
		}
		if !bytes.Equal(got, buf[sa.hl:]) {
			t.Fatal("payload differs")
		}
	})
}
