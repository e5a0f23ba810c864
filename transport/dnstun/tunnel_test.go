package dnstun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"

	"cab/transport"
)

// exchanger is an in-memory resolver between a clientCore and a
// serverCore: each query and each answer is lost with probability loss,
// and each crossing takes delay (with jitter, so answers reorder).
type exchanger struct {
	mu       sync.Mutex
	r        *rand.Rand
	loss     float64
	delay    time.Duration
	server   *serverCore
	client   *clientCore
	rcode    int // when not 0, the resolver answers this instead
	sent     []time.Time
	maxSize  int // largest answer seen
	queries  int
	answered int
}

func (e *exchanger) lose() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.r.Float64() < e.loss
}

func (e *exchanger) hop() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delay + time.Duration(e.r.Int64N(int64(e.delay/2)+1))
}

func (e *exchanger) send(b []byte) error {
	e.mu.Lock()
	e.sent = append(e.sent, time.Now())
	e.queries++
	rcode := e.rcode
	e.mu.Unlock()
	if e.lose() {
		return nil
	}
	b = append([]byte(nil), b...)
	time.AfterFunc(e.hop(), func() {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			panic("client sent an undecodable query")
		}
		// The resolver randomises the case of the name.
		req.Question[0].Name = randomCase(rand.New(rand.NewPCG(uint64(req.Id), 1)), req.Question[0].Name)
		var resp *dns.Msg
		if rcode != 0 {
			resp = new(dns.Msg)
			resp.SetRcode(req, rcode)
		} else {
			resp = e.server.handle(req, time.Now())
		}
		out, err := resp.Pack()
		if err != nil {
			panic(err)
		}
		e.mu.Lock()
		e.maxSize = max(e.maxSize, len(out))
		e.answered++
		e.mu.Unlock()
		if e.lose() {
			return
		}
		time.AfterFunc(e.hop(), func() { e.client.answer(out, time.Now()) })
	})
	return nil
}

// tunnel is a clientCore and a serverCore joined by an exchanger, with the
// client's timer loop running.
type tunnel struct {
	e    *exchanger
	c    *clientCore
	s    *serverCore
	stop chan struct{}
	done chan struct{}
}

func newTunnel(t *testing.T, loss float64, delay time.Duration) *tunnel {
	e := &exchanger{r: rand.New(rand.NewPCG(uint64(loss*1000), 7)), loss: loss, delay: delay}
	e.server = newServerCore(testZone, discard)
	e.client = newClientCore(testZone, discard, e.send)
	tu := &tunnel{e: e, c: e.client, s: e.server, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tu.done)
		tm := time.NewTimer(time.Hour)
		for {
			next := tu.c.step(time.Now())
			tm.Reset(max(time.Until(next), time.Millisecond))
			select {
			case <-tu.stop:
				tm.Stop()
				return
			case <-tu.c.wake:
			case <-tm.C:
			}
		}
	}()
	return tu
}

func (tu *tunnel) close() {
	tu.c.mu.Lock()
	tu.c.closed = true
	tu.c.mu.Unlock()
	close(tu.stop)
	<-tu.done
	time.Sleep(time.Minute) // let the exchanger's timers run out
}

func packet(i, n int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, n)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

// transfer sends n packets of size bytes each way, paced, and returns how
// many arrived intact at each end within the time allowed.
func transfer(t *testing.T, tu *tunnel, n, size int, gap time.Duration) (up, down int) {
	var sid uint32
	// The first packet opens the session.
	tu.c.write(packet(0, size), time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for sid == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		tu.s.mu.Lock()
		for k := range tu.s.sessions {
			sid = k
		}
		tu.s.mu.Unlock()
	}
	if sid == 0 {
		t.Fatal("no session within 10 s")
	}
	for i := 1; i < n; i++ {
		tu.c.write(packet(i, size), time.Now())
		tu.s.write(sid, packet(i, size), time.Now())
		time.Sleep(gap)
	}
	gotUp, gotDown := map[int]bool{}, map[int]bool{}
	end := time.After(20 * time.Second)
	for {
		select {
		case p := <-tu.s.rx:
			i := int(binary.BigEndian.Uint32(p.B))
			if !bytes.Equal(p.B, packet(i, size)) || p.Addr != (ClientAddr{sid}) {
				t.Fatalf("upstream packet %d corrupt or from %v", i, p.Addr)
			}
			gotUp[i] = true
		case p := <-tu.c.rx:
			i := int(binary.BigEndian.Uint32(p.B))
			if !bytes.Equal(p.B, packet(i, size)) {
				t.Fatalf("downstream packet %d corrupt", i)
			}
			gotDown[i] = true
		case <-end:
			return len(gotUp), len(gotDown)
		}
	}
}

// TestTunnelLossy: full-size packets cross both ways through a resolver
// that loses queries and answers; selective retransmission delivers nearly
// all of them within their deadline, and no answer exceeds the size the
// query advertised.
func TestTunnelLossy(t *testing.T) {
	for _, tc := range []struct {
		loss float64
		min  float64 // fraction of packets that must arrive
	}{{0, 1}, {0.01, 0.99}, {0.05, 0.97}, {0.2, 0.15}} {
		t.Run(fmt.Sprintf("loss%.0f%%", tc.loss*100), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tu := newTunnel(t, tc.loss, 5*time.Millisecond)
				const n = 300
				up, down := transfer(t, tu, n, 1546, 40*time.Millisecond)
				tu.c.mu.Lock()
				st := tu.c.stats
				cwnd := tu.c.win.cwnd
				tu.c.mu.Unlock()
				t.Logf("loss %.0f%%: up %d/%d, down %d/%d; %d queries, %d lost, window %.1f", tc.loss*100, up, n-1, down, n-1, st.queries, st.lost, cwnd)
				if float64(up) < tc.min*float64(n-1) || float64(down) < tc.min*float64(n-1) {
					t.Errorf("up %d, down %d of %d packets; want at least %.0f%%", up, down, n-1, tc.min*100)
				}
				if tu.e.maxSize > EDNSSize {
					t.Errorf("an answer of %d bytes, above %d", tu.e.maxSize, EDNSSize)
				}
				tu.close()
			})
		})
	}
}

// TestWindow: the window grows while answers come, halves once per
// congestion event, and never goes below one query.
func TestWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWindow()
		start := w.size()
		for i := 0; i < 100; i++ {
			sent := time.Now()
			time.Sleep(10 * time.Millisecond)
			w.answered(sent, time.Now(), false)
		}
		if w.size() != maxWindow {
			t.Fatalf("window %d after 100 answers from %d, want %d", w.size(), start, maxWindow)
		}
		if rto := w.rto(); rto < minRTO || rto > 100*time.Millisecond+minRTO {
			t.Errorf("rto %v after 10 ms round trips", rto)
		}
		// Many losses of queries sent before the cut are one event.
		sent := time.Now()
		time.Sleep(time.Millisecond)
		for i := 0; i < 10; i++ {
			w.congested(sent, time.Now())
		}
		if w.size() != 44 {
			t.Fatalf("window %d after one congestion event, want %d", w.size(), 44)
		}
		for i := 0; i < 40; i++ {
			time.Sleep(time.Millisecond)
			w.congested(time.Now(), time.Now())
		}
		if w.size() != 1 {
			t.Fatalf("window %d after 40 events, want 1", w.size())
		}
		// After a cut, growth is linear: about one per window of answers.
		for i := 0; i < 10; i++ {
			w.answered(time.Now(), time.Now(), false)
		}
		if w.size() > 8 {
			t.Errorf("window %d after 10 answers in congestion avoidance", w.size())
		}
		// Timeouts in a row double the timeout, up to maxRTO; an answer
		// ends that.
		base := w.rto()
		sent = time.Now()
		time.Sleep(time.Millisecond)
		w.timedOut(sent, time.Now())
		w.timedOut(sent, time.Now()) // in flight with the first: no more
		if got := w.rto(); got != min(2*base, maxRTO) {
			t.Errorf("rto %v after one round of timeouts from %v", got, base)
		}
		for i := 0; i < 10; i++ {
			time.Sleep(time.Millisecond)
			w.timedOut(time.Now(), time.Now())
		}
		if got := w.rto(); got != maxRTO {
			t.Errorf("rto %v after many timeouts, want %v", got, maxRTO)
		}
		w.answered(time.Now(), time.Now(), false)
		if got := w.rto(); got >= maxRTO {
			t.Errorf("rto %v after an answer", got)
		}
	})
}

// TestWindowBacksOffOnServfail: a resolver that answers SERVFAIL (or
// REFUSED) drives the window to one and keeps it there; the packets'
// fragments are sent again, and cross once the resolver recovers.
func TestWindowBacksOffOnServfail(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tu := newTunnel(t, 0, 5*time.Millisecond)
				tu.c.write(packet(1, 100), time.Now())
				time.Sleep(time.Second)
				if p := recvTimeout(tu.s.rx, time.Second); p == nil {
					t.Fatal("no packet before the failure")
				}
				tu.e.mu.Lock()
				tu.e.rcode = rcode
				tu.e.mu.Unlock()
				for i := 2; i < 30; i++ {
					tu.c.write(packet(i, 1546), time.Now())
				}
				time.Sleep(time.Second)
				tu.c.mu.Lock()
				w, sf := tu.c.win.size(), tu.c.stats.servfail
				tu.c.mu.Unlock()
				if w != 1 || sf == 0 {
					t.Fatalf("window %d after %d failures, want 1", w, sf)
				}
				tu.e.mu.Lock()
				tu.e.rcode = 0
				tu.e.mu.Unlock()
				got := 0
				for recvTimeout(tu.s.rx, 3*time.Second) != nil {
					got++
				}
				if got == 0 {
					t.Fatal("nothing crossed after the resolver recovered")
				}
				tu.close()
			})
		})
	}
}

func recvTimeout(ch chan transport.Packet, d time.Duration) *transport.Packet {
	select {
	case p := <-ch:
		return &p
	case <-time.After(d):
		return nil
	}
}

// TestIdlePolling: with no traffic, the client still polls at least every
// 2 s, so a packet the server queues reaches it within about 2 s.
func TestIdlePolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tu := newTunnel(t, 0, 5*time.Millisecond)
		transfer(t, tu, 2, 100, 0)
		for i := 0; i < 3; i++ { // keepalives, as the cable sends them
			time.Sleep(20 * time.Second)
			tu.c.write(packet(9, 60), time.Now())
		}
		tu.e.mu.Lock()
		sent := append([]time.Time(nil), tu.e.sent...)
		tu.e.mu.Unlock()
		from := sent[len(sent)-1].Add(-50 * time.Second)
		var gap time.Duration
		n := 0
		for i := 1; i < len(sent); i++ {
			if sent[i].After(from) {
				gap = max(gap, sent[i].Sub(sent[i-1]))
				n++
			}
		}
		if gap > maxPoll+50*time.Millisecond {
			t.Errorf("idle gap of %v between queries", gap)
		}
		if n > 100 {
			t.Errorf("%d queries in 50 idle seconds", n)
		}
		var sid uint32
		tu.s.mu.Lock()
		for k := range tu.s.sessions {
			sid = k
		}
		tu.s.mu.Unlock()
		t0 := time.Now()
		tu.s.write(sid, packet(77, 300), time.Now())
		for {
			p := recvTimeout(tu.c.rx, 3*time.Second)
			if p == nil {
				t.Fatal("an idle client did not get the server's packet within 3 s")
			}
			if binary.BigEndian.Uint32(p.B) == 77 {
				break
			}
		}
		if d := time.Since(t0); d > maxPoll+100*time.Millisecond {
			t.Errorf("downstream packet took %v on an idle tunnel", d)
		}
		tu.close()
	})
}

// TestServerRestart: when the server forgets the session (NXDOMAIN for
// it), the client opens it again and traffic resumes.
func TestServerRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tu := newTunnel(t, 0, 5*time.Millisecond)
		transfer(t, tu, 2, 100, 0)
		fresh := newServerCore(testZone, discard)
		tu.e.mu.Lock()
		tu.e.server = fresh
		tu.e.mu.Unlock()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			tu.c.write(packet(5, 500), time.Now())
			if p := recvTimeout(fresh.rx, 500*time.Millisecond); p != nil {
				tu.close()
				return
			}
		}
		t.Fatal("no packet reached the restarted server within 10 s")
	})
}

// TestDeadResolver: when nothing answers, the client's timeout doubles up
// to maxRTO, so it asks about once per maxRTO instead of ever faster.
func TestDeadResolver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tu := newTunnel(t, 0, 5*time.Millisecond)
		transfer(t, tu, 2, 100, 0)
		tu.e.mu.Lock()
		tu.e.loss = 1
		tu.e.mu.Unlock()
		tu.c.write(packet(3, 1546), time.Now())
		time.Sleep(30 * time.Second)
		tu.c.write(packet(4, 60), time.Now()) // the cable keeps writing
		tu.e.mu.Lock()
		before := tu.e.queries
		tu.e.mu.Unlock()
		time.Sleep(30 * time.Second)
		tu.e.mu.Lock()
		n := tu.e.queries - before
		tu.e.mu.Unlock()
		if n > 30/int(maxRTO/time.Second)+5 {
			t.Errorf("%d queries in 30 s to a dead resolver", n)
		}
		tu.close()
	})
}

// TestClientGoesQuiet: a client with nothing written for clientIdle stops
// polling; the next write opens the session again and crosses.
func TestClientGoesQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tu := newTunnel(t, 0, 5*time.Millisecond)
		transfer(t, tu, 2, 100, 0)
		time.Sleep(clientIdle + 5*time.Second)
		tu.e.mu.Lock()
		before := tu.e.queries
		tu.e.mu.Unlock()
		time.Sleep(time.Minute)
		tu.e.mu.Lock()
		n := tu.e.queries - before
		tu.e.mu.Unlock()
		if n != 0 {
			t.Errorf("%d queries in a minute from an idle client", n)
		}
		tu.c.write(packet(6, 700), time.Now())
		if p := recvTimeout(tu.s.rx, 5*time.Second); p == nil || binary.BigEndian.Uint32(p.B) != 6 {
			t.Fatal("the write after the quiet did not cross")
		}
		tu.close()
	})
}
