package cab

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// tcpSum computes the TCP checksum of seg over the pseudo-header of src
// and dst (4 or 16 bytes each).
func tcpSum(src, dst, seg []byte) uint16 {
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(src)
	add(dst)
	s += protoTCP + uint32(len(seg))
	add(seg)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// synFrame builds a TCP SYN frame with the given options, VLAN tags and IP
// version, and a correct checksum.
func synFrame(v6 bool, tags int, flags byte, opts []byte) []byte {
	tcp := make([]byte, 20+len(opts))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], opts)
	var ip []byte
	var src, dst []byte
	etype := uint16(etherTypeIPv4)
	if v6 {
		etype = etherTypeIPv6
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = protoTCP, 64
		ip[8], ip[23] = 0x20, 1
		ip[24], ip[39] = 0x20, 2
		src, dst = ip[8:24], ip[24:40]
	} else {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, protoTCP
		copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
		src, dst = ip[12:16], ip[16:20]
	}
	binary.BigEndian.PutUint16(tcp[16:], tcpSum(src, dst, tcp))
	f := make([]byte, 12)
	f[0], f[5], f[6], f[11] = 2, 1, 2, 2
	for i := 0; i < tags; i++ {
		tpid := uint16(etherTypeVLAN)
		if tags == 2 && i == 0 {
			tpid = etherTypeQinQ
		}
		f = binary.BigEndian.AppendUint16(f, tpid)
		f = binary.BigEndian.AppendUint16(f, uint16(10+i))
	}
	f = binary.BigEndian.AppendUint16(f, etype)
	f = append(f, ip...)
	return append(f, tcp...)
}

// parsed returns the pseudo-header addresses and the TCP segment of a
// frame built by synFrame.
func parsed(f []byte, v6 bool, tags int) (src, dst, seg []byte) {
	ip := f[14+4*tags:]
	if v6 {
		return ip[8:24], ip[24:40], ip[40:]
	}
	return ip[12:16], ip[16:20], ip[20:]
}

func mssOf(seg []byte) int {
	opts := seg[20 : int(seg[12]>>4)*4]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return -1
		case 1:
			i++
			continue
		}
		if opts[i] == 2 {
			return int(binary.BigEndian.Uint16(opts[i+2:]))
		}
		i += int(opts[i+1])
	}
	return -1
}

func TestClampMSS(t *testing.T) {
	const frameMTU = 1420 // UDP over a 1500-byte IPv6 underlay
	mss1460 := []byte{2, 4, 0x05, 0xb4}
	cases := []struct {
		name    string
		v6      bool
		tags    int
		flags   byte
		opts    []byte
		changed bool
		want    int
	}{
		{"v4 syn", false, 0, 0x02, mss1460, true, 1420 - 14 - 40},
		{"v4 syn-ack", false, 0, 0x12, mss1460, true, 1366},
		{"v6 syn", true, 0, 0x02, mss1460, true, 1420 - 14 - 60},
		{"v4 802.1q", false, 1, 0x02, mss1460, true, 1420 - 18 - 40},
		{"v6 qinq", true, 2, 0x02, mss1460, true, 1420 - 22 - 60},
		{"v4 ack untouched", false, 0, 0x10, mss1460, false, 1460},
		{"v4 syn without mss", false, 0, 0x02, []byte{1, 1, 4, 2}, false, -1},
		{"v4 mss already smaller", false, 0, 0x02, []byte{2, 4, 0x04, 0x00}, false, 1024},
		{"odd offset", false, 0, 0x02, []byte{1, 2, 4, 0x05, 0xb4, 0, 0, 0}, true, 1366},
		{"after sack-permitted and ts", true, 0, 0x02, []byte{4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 4, 0x23, 0x28, 0, 0, 0}, true, 1346},
		{"end before mss", false, 0, 0x02, []byte{0, 0, 2, 4, 5, 0xb4, 0, 0}, false, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := synFrame(tc.v6, tc.tags, tc.flags, tc.opts)
			before := append([]byte(nil), f...)
			got := clampMSS(f, frameMTU)
			if got != tc.changed {
				t.Fatalf("changed = %v, want %v", got, tc.changed)
			}
			if len(f) != len(before) {
				t.Fatal("length changed")
			}
			src, dst, seg := parsed(f, tc.v6, tc.tags)
			if m := mssOf(seg); m != tc.want {
				t.Fatalf("MSS %d, want %d", m, tc.want)
			}
			if tcpSum(src, dst, seg) != 0 && tcpSumCheck(src, dst, seg) != 0 {
				t.Fatal("checksum wrong after clamp")
			}
			if !tc.changed && !bytes.Equal(f, before) {
				t.Fatal("frame changed though clamp said it did not")
			}
			if clampMSS(f, frameMTU) {
				t.Fatal("second clamp changed the frame again")
			}
		})
	}
}

// tcpSumCheck returns 0 when seg's checksum verifies.
func tcpSumCheck(src, dst, seg []byte) uint16 {
	c := append([]byte(nil), seg...)
	want := binary.BigEndian.Uint16(c[16:])
	c[16], c[17] = 0, 0
	if tcpSum(src, dst, c) == want {
		return 0
	}
	return 1
}

func TestMTUFormula(t *testing.T) {
	// UDP over a 1500-byte underlay, worst-case IPv6 outer header.
	wire := WireMTU(DefaultUnderlayMTU - OuterUDPOverhead)
	if wire != 1452 || wire.Frame() != 1420 || FrameMTU(1420).L3(0) != 1406 || FrameMTU(1420).L3(1) != 1402 ||
		L3MTU(1406).MSS(false) != 1366 || L3MTU(1406).MSS(true) != 1346 {
		t.Fatalf("wire %d frame %d l3 %d mss %d/%d", wire, wire.Frame(), FrameMTU(1420).L3(0), L3MTU(1406).MSS(false), L3MTU(1406).MSS(true))
	}
	if wire.Frame().Wire() != wire || MSS(1366).Frame() != 1420 {
		t.Fatalf("inverses: %d %d", wire.Frame().Wire(), MSS(1366).Frame())
	}
}

func FuzzClampMSS(f *testing.F) {
	f.Add(synFrame(false, 0, 0x02, []byte{2, 4, 0x05, 0xb4}), 1420)
	f.Add(synFrame(true, 2, 0x12, []byte{1, 2, 4, 0x05, 0xb4, 0, 0, 0}), 1300)
	f.Add(synFrame(false, 1, 0x02, []byte{4, 2, 2, 4, 0x05, 0xb4}), 600)
	f.Fuzz(func(t *testing.T, frame []byte, mtu int) {
		orig := append([]byte(nil), frame...)
		changed := clampMSS(frame, FrameMTU(mtu))
		if len(frame) != len(orig) {
			t.Fatal("length changed")
		}
		if !changed && !bytes.Equal(frame, orig) {
			t.Fatal("changed the frame but said it did not")
		}
		again := append([]byte(nil), frame...)
		if clampMSS(again, FrameMTU(mtu)) {
			t.Fatal("not idempotent")
		}
		if changed && !bytes.Equal(again, frame) {
			t.Fatal("second clamp altered bytes")
		}
		// The checksum stays valid: the ones' complement sum over the
		// changed bytes moved by exactly the checksum's change.
		if changed {
			var d1, d2 uint32
			for i := 0; i+1 < len(frame); i += 2 {
				d1 += uint32(binary.BigEndian.Uint16(orig[i:]))
				d2 += uint32(binary.BigEndian.Uint16(frame[i:]))
			}
			if len(frame)%2 == 1 {
				d1 += uint32(orig[len(orig)-1]) << 8
				d2 += uint32(frame[len(frame)-1]) << 8
			}
			fold := func(s uint32) uint32 {
				for s>>16 != 0 {
					s = s&0xffff + s>>16
				}
				return s
			}
			if a, b := fold(d1), fold(d2); a != b && !(a == 0xffff && b == 0) && !(a == 0 && b == 0xffff) {
				t.Fatalf("ones' complement sum of the frame moved from %04x to %04x", a, b)
			}
		}
	})
}

// TestCableClampsSYN: a SYN entering the cable leaves the other end with
// its MSS lowered and a valid checksum; with clamping off it is untouched.
// The receiving end clamps too, to its own setting: with the client's
// clamp at 1000 and the server's at 800, the SYN arrives with 800.
func TestCableClampsSYN(t *testing.T) {
	for _, c := range []struct{ client, server, want int }{
		{0, 0, 1366}, {-1, -1, 1460}, {1000, -1, 1000}, {1000, 800, 800}, {-1, 0, 1366},
	} {
		clamp := c.client
		server, client := startPair(t, pairOpts{serverPSK: psk(9), clientPSK: psk(9)})
		client.cable.cfg.MSSClamp = clamp
		server.cable.cfg.MSSClamp = c.server
		waitUp(t, client, 1)
		syn := synFrame(false, 0, 0x02, []byte{2, 4, 0x05, 0xb4})
		client.port.Inject(syn)
		var got []byte
		select {
		case got = <-server.port.Frames():
		case <-time.After(5 * time.Second):
			t.Fatalf("clamp %d: the SYN did not arrive", clamp)
		}
		src, dst, seg := parsed(got, false, 0)
		if m := mssOf(seg); m != c.want || tcpSumCheck(src, dst, seg) != 0 {
			t.Errorf("clamp %d at the client, %d at the server: MSS %d (want %d), checksum ok %v", clamp, c.server, m, c.want, tcpSumCheck(src, dst, seg) == 0)
		}
		server.close(t)
		client.close(t)
	}
}

func BenchmarkClampMSS(b *testing.B) {
	syn := synFrame(false, 1, 0x02, []byte{2, 4, 0x05, 0xb4})
	data := synFrame(false, 0, 0x10, nil)
	b.Run("syn", func(b *testing.B) {
		f := make([]byte, len(syn))
		for i := 0; i < b.N; i++ {
			copy(f, syn)
			clampMSS(f, 1420)
		}
	})
	b.Run("data", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			clampMSS(data, 1420)
		}
	})
}

// TestClampFollowsPeerAtOnce: the MSS clamp works to a peer's wire MTU
// from the moment the peer is up and back to the default when it goes
// down, without waiting for the timers' tick (the cable here never runs
// its timers).
func TestClampFollowsPeerAtOnce(t *testing.T) {
	c, p := reassemblyPeer(t)
	c.peers.Store(&[]*peer{p})
	p.route.wireMTU.Store(1000)
	if got := c.FrameMTU(); got != defaultWireMTU.Frame() {
		t.Fatalf("no peer up: frame MTU %d, want %d", got, defaultWireMTU.Frame())
	}
	c.setUp(p, true, "")
	if got := c.FrameMTU(); got != WireMTU(1000).Frame() {
		t.Errorf("peer up over a wire MTU of 1000: frame MTU %d, want %d", got, WireMTU(1000).Frame())
	}
	c.setUp(p, false, "test")
	if got := c.FrameMTU(); got != defaultWireMTU.Frame() {
		t.Errorf("peer down: frame MTU %d, want %d", got, defaultWireMTU.Frame())
	}
}
