package bridgeif

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pumpTAPs copies frames from a to b until a fails, in batches, with the
// given headroom, the way the cable does.
func pumpTAPs(a, b Port, wg *sync.WaitGroup, largest *atomic.Int64) {
	defer wg.Done()
	const off = 16
	bufs, sizes := makeBufs(64, off+MaxFrame+16)
	out := make([][]byte, 0, 64)
	for {
		n, err := a.ReadBatch(bufs, sizes, off)
		if err != nil {
			return
		}
		out = out[:0]
		for i := range n {
			if int64(sizes[i]) > largest.Load() {
				largest.Store(int64(sizes[i]))
			}
			out = append(out, bufs[i][:off+sizes[i]])
		}
		if _, err := b.WriteBatch(out, off); err != nil {
			return
		}
	}
}

// TestTAPOffloadTCP joins two namespaces through two TAPs with offloads and
// a pump that moves frames between them, as the cable would, then sends 32
// MiB over TCP both ways. The kernel hands over super-frames that ReadBatch
// cuts into segments no larger than the MTU, and WriteBatch glues them
// again; the data must arrive intact, and both must have happened.
func TestTAPOffloadTCP(t *testing.T) {
	needRoot(t)
	nsA, nsB := quietNetns(t), quietNetns(t)
	var ta, tb *TAP
	var err error
	inNetns(t, nsA, func() { ta, err = OpenTAPWith("cabofa", TAPOptions{Offload: true}) })
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	inNetns(t, nsB, func() { tb, err = OpenTAPWith("cabofb", TAPOptions{Offload: true}) })
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if ta.Offloads() == "" || tb.Offloads() == "" {
		t.Fatal("no offloads reported")
	}
	t.Logf("offloads: %s", ta.Offloads())
	for _, c := range [][]string{
		{"-n", nsA, "link", "set", "cabofa", "mtu", "1400"},
		{"-n", nsB, "link", "set", "cabofb", "mtu", "1400"},
		{"-n", nsA, "addr", "add", "192.0.2.1/24", "dev", "cabofa"},
		{"-n", nsB, "addr", "add", "192.0.2.2/24", "dev", "cabofb"},
	} {
		ipOut(t, c...)
	}
	var wg sync.WaitGroup
	var largestAB, largestBA atomic.Int64
	wg.Add(2)
	go pumpTAPs(ta, tb, &wg, &largestAB)
	go pumpTAPs(tb, ta, &wg, &largestBA)
	defer func() { ta.Close(); tb.Close(); wg.Wait() }()

	echoTCP(t, nsA, nsB, "192.0.2.2")
	if l := max(largestAB.Load(), largestBA.Load()); l > 1400+14 {
		t.Errorf("a frame of %d bytes was read: segments must fit the MTU 1400", l)
	}
	for _, tp := range []*TAP{ta, tb} {
		seg, coal, bad := tp.OffloadStats()
		t.Logf("%s: %d super-frames cut, %d glued, %d malformed", tp.Name(), seg, coal, bad)
		if seg == 0 || coal == 0 || bad != 0 {
			t.Errorf("%s: %d super-frames cut, %d glued, %d malformed: want some, some, none", tp.Name(), seg, coal, bad)
		}
	}
}

// echoTCP sends 32 MiB over TCP from namespace nsA to a server at addr in
// nsB, which echoes it back, and checks that both ways arrive intact.
func echoTCP(t *testing.T, nsA, nsB, addr string) {
	t.Helper()
	var err error
	var ln net.Listener
	inNetns(t, nsB, func() { ln, err = net.Listen("tcp4", addr+":0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 32 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*31 + i>>9)
	}
	want := sha256.Sum256(data)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		// Echo back what comes, hashing it on the way.
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(h, c), c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	var c net.Conn
	inNetns(t, nsA, func() { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	echo := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		echo <- b
	}()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-got
	if r.err != nil || r.n != size || r.sum != want {
		t.Fatalf("A→B: %d bytes, %v, hash ok %v", r.n, r.err, r.sum == want)
	}
	if back := <-echo; !bytes.Equal(back, data) {
		t.Fatalf("B→A: %d bytes back, differ", len(back))
	}
}

// TestTrunkOffloadKernel: a trunk TAP keeps its offloads, and the 4-byte
// tag moves csum_start and hdr_len the way the kernel counts them. VLAN
// 100 of TAP a writes ten TCP segments of one flow: they go to the kernel
// as one tagged super-frame. A Linux bridge forwards it to TAP b. Read
// from b without offloads, the kernel has cut it (from our offsets) into
// ten tagged frames; read from b with offloads through VLAN 100 of a trunk,
// the kernel hands the tagged super-frame over with its own offsets, which
// the TAP cuts and the trunk untags. Either way the ten segments come out
// as they went in.
func TestTrunkOffloadKernel(t *testing.T) {
	needRoot(t)
	for _, bOffload := range []bool{false, true} {
		t.Run(map[bool]string{false: "kernel cuts", true: "cab cuts"}[bOffload], func(t *testing.T) {
			ns := quietNetns(t)
			var ta, tb *TAP
			var err error
			inNetns(t, ns, func() {
				if ta, err = OpenTAPWith("cabtka", TAPOptions{Offload: true}); err == nil {
					tb, err = OpenTAPWith("cabtkb", TAPOptions{Offload: bOffload})
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ta.Close()
			defer tb.Close()
			for _, c := range [][]string{
				{"-n", ns, "link", "add", "cabtkbr", "type", "bridge"},
				{"-n", ns, "link", "set", "cabtka", "master", "cabtkbr", "up"},
				{"-n", ns, "link", "set", "cabtkb", "master", "cabtkbr", "up"},
				{"-n", ns, "link", "set", "cabtkbr", "up"},
			} {
				ipOut(t, c...)
			}
			va, err := NewTrunk(ta, nil).VLAN(100)
			if err != nil {
				t.Fatal(err)
			}
			defer va.Close()
			var segs [][]byte
			seq := uint32(1 << 20)
			for i := range 10 {
				n, fl := 1348, byte(0x10)
				if i == 9 {
					n, fl = 700, 0x18
				}
				segs = append(segs, tcpFrame(false, seq, uint16(100+i), fl, nil, payloadOf(n, byte(i))))
				seq += uint32(n)
			}
			var got [][]byte
			var rd Port = tb
			if bOffload {
				vb, err := NewTrunk(tb, nil).VLAN(100)
				if err != nil {
					t.Fatal(err)
				}
				defer vb.Close()
				rd = vb
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				bufs, sizes := makeBufs(16, 16+MaxFrame+16)
				deadline := time.Now().Add(10 * time.Second)
				for len(got) < len(segs) && time.Now().Before(deadline) {
					n, err := rd.ReadBatch(bufs, sizes, 16)
					if err != nil {
						return
					}
					for i := range n {
						f := append([]byte(nil), bufs[i][16:16+sizes[i]]...)
						if !bOffload {
							vid, ok := VLANOf(f)
							if !ok || vid != 100 {
								continue // not ours: the bridge's own
							}
							f = append(f[:12:12], f[16:]...)
						}
						if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
							got = append(got, f)
						}
					}
				}
			}()
			bufs := make([][]byte, len(segs))
			for i, f := range segs {
				bufs[i] = append(make([]byte, 16), f...)
			}
			if n, err := va.WriteBatch(bufs, 16); n != len(segs) || err != nil {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
			if _, coal, _ := ta.OffloadStats(); coal != 1 {
				t.Fatalf("%d super-frames written to the trunk's TAP, want the ten segments glued into 1", coal)
			}
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("the reader did not end")
			}
			if len(got) != len(segs) {
				t.Fatalf("%d of %d segments came out of b", len(got), len(segs))
			}
			for i := range segs {
				if !bytes.Equal(got[i], segs[i]) {
					t.Errorf("segment %d differs: %d bytes, want %d; checksum valid %v", i, len(got[i]), len(segs[i]), validL4(t, got[i]))
				}
			}
			seg, _, bad := tb.OffloadStats()
			if bOffload && (seg != 1 || bad != 0) {
				t.Errorf("b cut %d tagged super-frames (want 1), %d malformed", seg, bad)
			}
		})
	}
}

// BenchmarkTrunkWrite: batches of 64 TCP segments (1348 bytes of payload)
// written to VLAN 100 of a trunk TAP whose kernel side is a Linux bridge
// that forwards them to a second TAP, drained. With offloads the segments
// go to the kernel as tagged super-frames; without (offload=off), one
// frame per system call. Needs root.
func BenchmarkTrunkWrite(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for TAP devices and network namespaces")
	}
	for _, off := range []bool{false, true} {
		b.Run(map[bool]string{false: "offload=on", true: "offload=off"}[off], func(b *testing.B) {
			ns := quietNetns(b)
			var ta, tb *TAP
			var err error
			inNetns(b, ns, func() {
				if ta, err = OpenTAPWith("cabtka", TAPOptions{Offload: !off}); err == nil {
					tb, err = OpenTAPWith("cabtkb", TAPOptions{Offload: true})
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ta.Close()
			defer tb.Close()
			for _, c := range [][]string{
				{"-n", ns, "link", "add", "cabtkbr", "type", "bridge"},
				{"-n", ns, "link", "set", "cabtka", "master", "cabtkbr", "up"},
				{"-n", ns, "link", "set", "cabtkb", "master", "cabtkbr", "up"},
				{"-n", ns, "link", "set", "cabtkbr", "up"},
			} {
				if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
					b.Fatalf("ip %v: %v %s", c, err, out)
				}
			}
			go func() { // drain b
				bufs, sizes := makeBufs(64, MaxFrame+16)
				for {
					if _, err := tb.ReadBatch(bufs, sizes, 0); err != nil {
						return
					}
				}
			}()
			va, err := NewTrunk(ta, nil).VLAN(100)
			if err != nil {
				b.Fatal(err)
			}
			defer va.Close()
			const n = 64
			segs := make([][]byte, n)
			bufs := make([][]byte, n)
			seq := uint32(1)
			for i := range segs {
				segs[i] = tcpFrame(false, seq, uint16(i), 0x10, nil, payloadOf(1348, byte(i)))
				seq += 1348
				bufs[i] = make([]byte, 16+len(segs[i]))
			}
			b.SetBytes(int64(n * len(segs[0])))
			b.ResetTimer()
			for range b.N {
				for i, f := range segs { // the VLAN port tags in place
					copy(bufs[i][16:], f)
				}
				if _, err := va.WriteBatch(bufs, 16); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_, coal, _ := ta.OffloadStats()
			b.ReportMetric(float64(coal)/float64(b.N), "superframes/op")
		})
	}
}
