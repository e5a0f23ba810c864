package bridgeif

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pumpTAPs copies frames from a to b until a fails, in batches, with the
// given headroom, the way the cable does.
func pumpTAPs(a, b *TAP, wg *sync.WaitGroup, largest *atomic.Int64) {
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

	var ln net.Listener
	inNetns(t, nsB, func() { ln, err = net.Listen("tcp4", "192.0.2.2:0") })
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
