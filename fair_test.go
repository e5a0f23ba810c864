package cab

import (
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif/bridgeiftest"
	"cab/transport"
)

// broadcastFrom returns a broadcast frame from client MAC src carrying seq.
func broadcastFrom(src byte, seq uint32) []byte {
	b := testFrame(0xff, src, seq, 64)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return b
}

// inject queues f on port, waiting while the port's queue is full.
func inject(t testing.TB, port *bridgeiftest.Port, f []byte) {
	t.Helper()
	for i := 0; port.Inject(f) != nil; i++ {
		if i > 10000 {
			t.Fatal("the port's queue stays full")
		}
		time.Sleep(time.Millisecond)
	}
}

// bySource counts the frames waiting in port's Frames by source MAC byte.
func bySource(port *bridgeiftest.Port) map[byte]int {
	m := map[byte]int{}
	for {
		select {
		case f := <-port.Frames():
			m[f[11]]++
		default:
			return m
		}
	}
}

// learnServerSide makes the clients learn MAC 0xee behind the server: the
// server's side broadcasts from it.
func (h *hub) learnServerSide(t testing.TB) {
	t.Helper()
	b := broadcastFrom(0xee, 0)
	h.server.port.Inject(b)
	for _, c := range h.clients {
		expectFrames(t, c.port, [][]byte{b})
	}
}

// TestSourceFloodLimit: a client drops what its own side floods beyond its
// flood rate before sealing it, and counts it; unicast to a known MAC is
// not limited, and after the storm the rate is back.
func TestSourceFloodLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHubWith(t, 1, hubOpts{
			server: func(c *Config) { c.FloodRate, c.FloodBudget = -1, -1 },
			client: func(c *Config) { c.FloodRate = 100 },
		})
		h.learnServerSide(t)
		cl := h.clients[0]
		for i := range 1000 {
			inject(t, cl.port, broadcastFrom(mac(0), uint32(i)))
			if i%20 == 0 {
				inject(t, cl.port, testFrame(0xee, mac(0), uint32(i), 64))
			}
		}
		synctest.Wait()
		got := bySource(h.server.port)[mac(0)]
		// A burst of twice the rate, all at one instant: 200 broadcasts, and
		// the 50 unicast frames.
		if got != 200+50 {
			t.Errorf("%d frames reached the server's side, want 200 broadcasts and 50 unicast", got)
		}
		if d := dropCount(cl, "flood limit"); d != 800 {
			t.Errorf("the client counted %d flood-limit drops, want 800", d)
		}
		if d := cl.cable.Status().Drops["flood limit"]; d != 800 {
			t.Errorf("the client's own port's flood-limit drops %d, want 800 (not against its peer)", d)
		}
		if d := dropCount(h.server, "flood limit"); d != 0 {
			t.Errorf("the server dropped %d for flood limit: the client sent the storm", d)
		}
		time.Sleep(time.Second)
		f := broadcastFrom(mac(0), 5000)
		inject(t, cl.port, f)
		expectFrames(t, h.server.port, [][]byte{f})
	})
}

// TestFloodBudget: a hub's copies of flooded frames stay within its
// budget while one client floods as fast as it can, and the other
// clients' broadcasts, each within its share, all reach everyone.
func TestFloodBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 1000
		h := startHubWith(t, 4, hubOpts{
			server: func(c *Config) { c.FloodRate, c.FloodBudget = -1, budget },
			client: func(c *Config) { c.FloodRate, c.FloodBudget = -1, -1 },
		})
		sent := func() uint64 { // copies the server made: to peers and to its port
			n := uint64(0)
			for _, p := range h.server.cable.Status().Peers {
				n += p.TxFrames
			}
			return n
		}
		synctest.Wait()
		bySource(h.server.port)
		before := sent()
		start := time.Now()
		toPort, quiet := 0, 0
		heard := map[byte]int{} // at the server's port, by source
		count := func() {
			for src, n := range bySource(h.server.port) {
				toPort += n
				heard[src] += n
			}
		}
		for ms := 0; ms < 2000; ms += 10 {
			for k := range 100 { // 10 000 broadcasts a second from client 0
				inject(t, h.clients[0].port, broadcastFrom(mac(0), uint32(ms*100+k)))
			}
			if ms%100 == 0 { // 10 a second from each other client: 40 copies a second each
				for i := 1; i < 4; i++ {
					inject(t, h.clients[i].port, broadcastFrom(mac(i), uint32(ms)))
				}
				quiet++
			}
			time.Sleep(10 * time.Millisecond)
			count()
		}
		synctest.Wait()
		count()
		elapsed := time.Since(start)
		copies := sent() - before + uint64(toPort)
		limit := uint64(budget*elapsed.Seconds()) + budget/4
		if copies > limit {
			t.Errorf("the server made %d copies in %v, over its budget of %d/s (+%d burst)", copies, elapsed, budget, budget/4)
		}
		if copies < limit*3/4 {
			t.Errorf("the server made %d copies in %v of a budget of %d/s: the budget is not used", copies, elapsed, budget)
		}
		for j := 1; j < 4; j++ {
			m := bySource(h.clients[j].port)
			for i := 1; i < 4; i++ {
				if i != j && m[mac(i)] != quiet {
					t.Errorf("client %d heard %d of client %d's %d broadcasts", j, m[mac(i)], i, quiet)
				}
			}
			if heard[mac(j)] != quiet {
				t.Errorf("the server's side heard %d of client %d's %d broadcasts", heard[mac(j)], j, quiet)
			}
		}
		if d := dropCount(h.server, "flood budget"); d+uint64(heard[mac(0)]) != 20000 {
			t.Errorf("%d flood-budget drops and %d of client 0's 20000 broadcasts through", d, heard[mac(0)])
		}
	})
}

// laggingConn is a conn that says its packets waited lag in its queue.
type laggingConn struct {
	transport.Conn
	lag atomic.Int64
}

func (l *laggingConn) QueueDelay() time.Duration { return time.Duration(l.lag.Load()) }

// TestFairReading: while the server's reading falls behind, the client
// that sends the most loses packets before they are opened, the more the
// further behind, and the other loses none; no peer goes down; and when
// the server keeps up again, everything flows.
func TestFairReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var lc *laggingConn
		h := startHubWith(t, 2, hubOpts{wrap: func(c transport.Conn) transport.Conn {
			lc = &laggingConn{Conn: c}
			return lc
		}})
		h.learnServerSide(t)
		upSince := func() map[string]time.Time { // by site and peer
			m := map[string]time.Time{}
			for i, s := range append([]*site{h.server}, h.clients...) {
				for _, p := range s.cable.Status().Peers {
					if !p.Up {
						t.Fatalf("site %d: peer %s is down", i, p.Name)
					}
					m[fmt.Sprintf("site %d: peer %s", i, p.Name)] = p.UpSince
				}
			}
			return m
		}
		before := upSince()

		// Up to 10 ms in the queue is not behind: nothing is shed.
		lc.lag.Store(int64(5 * time.Millisecond))
		for i := range 500 {
			inject(t, h.clients[0].port, testFrame(0xee, mac(0), uint32(i), 64))
		}
		synctest.Wait()
		if got := bySource(h.server.port)[mac(0)]; got != 500 {
			t.Errorf("5 ms behind: %d of 500 frames through", got)
		}

		// Half-way behind (55 ms, between 10 and 100): client 0 sends 100
		// frames a millisecond, client 1 one; about half of what client 0
		// sends beyond its share is dropped, none of client 1's.
		lc.lag.Store(int64(55 * time.Millisecond))
		shed := dropCount(h.server, "fair share")
		for ms := range 30 {
			for k := range 100 {
				inject(t, h.clients[0].port, testFrame(0xee, mac(0), uint32(ms*100+k), 64))
			}
			inject(t, h.clients[1].port, testFrame(0xee, mac(1), uint32(ms), 64))
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		got := bySource(h.server.port)
		if got[mac(1)] != 30 {
			t.Errorf("client 1 got %d of its 30 frames through while client 0 flooded", got[mac(1)])
		}
		if got[mac(0)] > 3000*9/10 || got[mac(0)] < 3000*3/10 {
			t.Errorf("half-way behind, client 0 got %d of its 3000 frames through, want about half", got[mac(0)])
		}
		if d := dropCount(h.server, "fair share") - shed; d+uint64(got[mac(0)]) != 3000 {
			t.Errorf("%d fair-share drops and %d frames of client 0's 3000", d, got[mac(0)])
		}

		// Far behind (200 ms), for 15 s: client 0 floods 1000 frames a
		// second and loses all it sends beyond its share; client 1's frame
		// every 100 ms all get through, and the peers stay up all along.
		lc.lag.Store(int64(200 * time.Millisecond))
		shed = dropCount(h.server, "fair share")
		for i := range 150 {
			for k := range 100 {
				inject(t, h.clients[0].port, testFrame(0xee, mac(0), uint32(i*100+k), 64))
			}
			inject(t, h.clients[1].port, testFrame(0xee, mac(1), uint32(i), 64))
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		got = bySource(h.server.port)
		if got[mac(1)] != 150 {
			t.Errorf("far behind, client 1 got %d of its 150 frames through", got[mac(1)])
		}
		if got[mac(0)] > 15000/5 {
			t.Errorf("far behind, client 0 got %d of its 15000 frames through, want little more than %d a window of %d", got[mac(0)], minShare, fairWindow)
		}
		if d := dropCount(h.server, "fair share") - shed; d+uint64(got[mac(0)]) != 15000 {
			t.Errorf("%d fair-share drops and %d frames of client 0's 15000", d, got[mac(0)])
		}
		for _, p := range h.server.cable.Status().Peers {
			t.Logf("%s: rx %d, drops %v", p.Name, p.RxFrames, p.Drops)
		}
		after := upSince()
		for k, t0 := range before {
			if !after[k].Equal(t0) {
				t.Errorf("%s went down and up again while its packets arrived", k)
			}
		}

		// Caught up: everything flows.
		lc.lag.Store(0)
		var want [][]byte
		for i := range 50 {
			f := testFrame(0xee, mac(0), uint32(10000+i), 64)
			inject(t, h.clients[0].port, f)
			want = append(want, f)
		}
		expectFrames(t, h.server.port, want)
	})
}
