package cab

import (
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// downTimes polls the first peer of each site every 5 ms for at most
// limit and returns how long after the start each went down (0: never).
func downTimes(limit time.Duration, sites ...*site) []time.Duration {
	start := time.Now()
	ds := make([]time.Duration, len(sites))
	for left := len(sites); left > 0 && time.Since(start) < limit; {
		for i, s := range sites {
			if ds[i] == 0 && !s.cable.Status().Peers[0].Up {
				ds[i] = time.Since(start)
				left--
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ds
}

// TestDeadAfterDetects: with DeadAfter, a cut cable takes the peer down
// within DeadAfter and a tick of the last packet heard, on the dialing side
// and on the responder, idle or busy; without it, an idle client takes a
// keepalive interval and more.
func TestDeadAfterDetects(t *testing.T) {
	for _, dead := range []time.Duration{MinDeadAfter, time.Second, 3 * time.Second} {
		for _, busy := range []bool{false, true} {
			name := dead.String() + map[bool]string{false: "/idle", true: "/busy"}[busy]
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					n := transporttest.NewNetwork(transporttest.Options{Delay: 5 * time.Millisecond})
					set := func(c *Config) { c.DeadAfter = dead }
					server, cs := linkSites(t, n, set, []string{"client"}, set)
					client := cs[0]
					waitUp(t, client, 1)
					waitUp(t, server, 1)
					time.Sleep(10 * time.Second) // settle: the asks' steady state
					stop := make(chan struct{})
					defer close(stop)
					if busy {
						// Frames one way keep the client sending: only
						// asks and their answers come back.
						go func() {
							for i := 0; ; i++ {
								select {
								case <-stop:
									return
								case <-time.After(10 * time.Millisecond):
								}
								client.port.Inject(testFrame(0xaa, 0xbb, uint32(i), 100))
							}
						}()
						time.Sleep(5 * time.Second)
					}
					if !client.cable.Status().Peers[0].Up || !server.cable.Status().Peers[0].Up {
						t.Fatal("a peer went down on a live link")
					}
					// Cut the cable: both directions lost.
					sconn, cconn := connOf(server), connOf(client)
					sconn.SetDown(true)
					cconn.SetDown(true)
					// The last packet heard came at most a third of
					// DeadAfter and a tick before the cut.
					lo, hi := dead-dead/3-dead/6, dead+dead/6+10*time.Millisecond
					for i, d := range downTimes(2*dead+time.Second, client, server) {
						side := []string{"client", "server"}[i]
						switch {
						case d == 0:
							t.Errorf("%s: peer still up %v after the cut (DeadAfter %v)", side, 2*dead+time.Second, dead)
						case d > hi || d < lo:
							t.Errorf("%s: peer down %v after the cut, want %v to %v", side, d, lo, hi)
						default:
							t.Logf("%s: peer down %v after the cut", side, d)
						}
					}
					sconn.SetDown(false)
					cconn.SetDown(false)
					waitUp(t, client, 1)
				})
			})
		}
	}
}

// connOf is the in-memory conn of a site.
func connOf(s *site) *transporttest.Conn { return s.cable.conns[0].(*transporttest.Conn) }

// TestDeadAfterHoldsOnLiveLinks: a live link never goes down — idle, with
// frames one way, the other way or both, on a lossy path whose round trip
// is well within DeadAfter — and an idle link costs about one ask and one
// answer per third of DeadAfter.
func TestDeadAfterHoldsOnLiveLinks(t *testing.T) {
	paths := []struct {
		dead, delay time.Duration
		loss        float64
	}{
		{MinDeadAfter, 10 * time.Millisecond, 0.01}, // a 20 ms round trip
		{time.Second, 40 * time.Millisecond, 0.02},  // 80 ms
	}
	for _, path := range paths {
		for _, traffic := range []string{"idle", "to server", "to client", "both"} {
			t.Run(path.dead.String()+"/"+strings.ReplaceAll(traffic, " ", "_"), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					n := transporttest.NewNetwork(transporttest.Options{Delay: path.delay, Loss: path.loss, Seed: 18})
					set := func(c *Config) { c.DeadAfter = path.dead }
					server, cs := linkSites(t, n, set, []string{"client"}, set)
					client := cs[0]
					waitUp(t, client, 1)
					waitUp(t, server, 1)
					sent0 := connOf(server).Sent() + connOf(client).Sent()
					const span = 60 * time.Second
					start := time.Now()
					for time.Since(start) < span {
						if traffic == "to server" || traffic == "both" {
							client.port.Inject(testFrame(0xaa, 0xbb, 1, 100))
						}
						if traffic == "to client" || traffic == "both" {
							server.port.Inject(testFrame(0xbb, 0xaa, 1, 100))
						}
						for i, s := range []*site{client, server} {
							if !s.cable.Status().Peers[0].Up {
								t.Fatalf("%s traffic: the %s's peer went down after %v", traffic, []string{"client", "server"}[i], time.Since(start))
							}
						}
						time.Sleep(20 * time.Millisecond)
					}
					if hs := client.cable.Status().Peers[0].Handshakes; hs != 1 {
						t.Errorf("%d handshakes in %v, want 1 (no peer down, no rekey yet)", hs, span)
					}
					if traffic == "idle" {
						pps := float64(connOf(server).Sent()+connOf(client).Sent()-sent0) / span.Seconds()
						// An ask and its answer every third of DeadAfter
						// and a round trip, both directions together.
						want := 2 / (path.dead/3 + 2*path.delay).Seconds()
						t.Logf("idle link, DeadAfter %v, round trip %v: %.1f packets/s in all", path.dead, 2*path.delay, pps)
						if pps > want*1.5 || pps < want/2 {
							t.Errorf("idle link: %.1f packets/s, want about %.1f", pps, want)
						}
					}
				})
			})
		}
	}
}

// TestDeadAfterIdleCost: an idle link with DeadAfter 1s costs at most six
// packets a second, both ways together (the figure the README gives);
// without DeadAfter, an idle client sends a keepalive every 25 s.
func TestDeadAfterIdleCost(t *testing.T) {
	for _, dead := range []time.Duration{0, time.Second} {
		t.Run(dead.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := transporttest.NewNetwork(transporttest.Options{Delay: time.Millisecond})
				set := func(c *Config) { c.DeadAfter = dead }
				server, cs := linkSites(t, n, set, []string{"client"}, set)
				waitUp(t, cs[0], 1)
				waitUp(t, server, 1)
				time.Sleep(5 * time.Second)
				sent0 := connOf(server).Sent() + connOf(cs[0]).Sent()
				const span = 100 * time.Second // within a session: no rekey
				time.Sleep(span)
				pps := float64(connOf(server).Sent()+connOf(cs[0]).Sent()-sent0) / span.Seconds()
				t.Logf("idle link, DeadAfter %v: %.2f packets/s in all", dead, pps)
				switch {
				case dead == 0 && pps > 0.2:
					t.Errorf("default detection: %.2f packets/s on an idle link, want a keepalive every 25 s and its answer", pps)
				case dead > 0 && (pps > 6.0 || pps < 2.0):
					t.Errorf("DeadAfter %v: %.2f packets/s on an idle link, want 3 to 6", dead, pps)
				}
			})
		})
	}
}

// TestDeadAfterAnswersAreBounded: a peer that asks in a burst gets at most
// one answer per answerGap; answers carry no ask, so two cables never ask
// each other in a loop.
func TestDeadAfterAnswersAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		server, cs := linkSites(t, n, nil, []string{"client"}, nil)
		client := cs[0]
		waitUp(t, client, 1)
		waitUp(t, server, 1)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		before := connOf(server).Sent()
		p := client.cable.peerList()[0]
		for i := 0; i < 100; i++ { // 100 asks in 100 ms
			client.cable.sendKeepaliveFlags(p, time.Now().UnixNano(), crypto.FlagAsk)
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second)
		answers := connOf(server).Sent() - before
		if max := uint64(100*time.Millisecond/answerGap) + 2; answers > max || answers == 0 {
			t.Errorf("100 asks in 100 ms got %d answers, want 1 to %d", answers, max)
		}
	})
}

// TestDeadAfterBounds: New refuses a DeadAfter outside its bounds.
func TestDeadAfterBounds(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, MinDeadAfter - 1, MaxDeadAfter + 1, -time.Second} {
		cfg := Config{PrivateKey: mustKey(t), DeadAfter: d}
		if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "dead-after") {
			t.Errorf("DeadAfter %v: %v, want a dead-after error", d, err)
		}
	}
	for _, d := range []time.Duration{0, MinDeadAfter, time.Second, MaxDeadAfter} {
		cfg := Config{PrivateKey: mustKey(t), DeadAfter: d}
		if err := cfg.Validate(); err != nil {
			t.Errorf("DeadAfter %v: %v", d, err)
		}
	}
}

// askCounter is a conn that counts the asks (FlagAsk) it sends.
type askCounter struct {
	*transporttest.Conn
	asks atomic.Uint64
}

func (a *askCounter) WriteBatch(ps []transport.Packet) error {
	for _, p := range ps {
		if len(p.B) >= crypto.HeaderLen && p.B[0] == crypto.TypeData && p.B[1]&crypto.FlagAsk != 0 {
			a.asks.Add(1)
		}
	}
	return a.Conn.WriteBatch(ps)
}

// TestDeadAfterAsksOnlyWhenQuiet: a link with frames both ways carries no
// asks; once it is quiet, the asks start.
func TestDeadAfterAsksOnlyWhenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{Delay: time.Millisecond})
		skey := mustKey(t)
		sconn, cconn := &askCounter{Conn: n.Conn("server")}, &askCounter{Conn: n.Conn("client")}
		server := startSite(t, Config{PrivateKey: skey, PSK: psk(20), Responder: true, AllowAny: true, DeadAfter: time.Second}, sconn)
		client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(20), DeadAfter: time.Second, Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
		waitUp(t, client, 1)
		exchange(t, server, client, 1)
		asks := func() uint64 { return sconn.asks.Load() + cconn.asks.Load() }
		// 30 s of frames both ways, 20 a second each way.
		before := asks()
		for i := 0; i < 600; i++ {
			client.port.Inject(testFrame(0xaa, 0xbb, uint32(i), 100))
			server.port.Inject(testFrame(0xbb, 0xaa, uint32(i), 100))
			time.Sleep(50 * time.Millisecond)
			drain(client)
			drain(server)
		}
		if busy := asks() - before; busy != 0 {
			t.Errorf("%d asks in 30 s of traffic both ways, want none", busy)
		}
		before = asks()
		time.Sleep(30 * time.Second)
		if quiet := asks() - before; quiet < 30 {
			t.Errorf("%d asks in 30 quiet seconds with DeadAfter 1s, want about 60", quiet)
		}
		if !client.cable.Status().Peers[0].Up || !server.cable.Status().Peers[0].Up {
			t.Error("a peer went down")
		}
	})
}
