package cab

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif/bridgeiftest"
	"cab/transport"
	"cab/transport/transporttest"
)

// TestCableFallback: a client with a preferred transport and a fallback
// moves to the fallback when the preferred one stops carrying packets
// (both ways, or only towards the server),
// keeps its place (one peer, its MACs) on the server, and returns to the
// preferred transport when it works again.
func TestCableFallback(t *testing.T) {
	for _, oneWay := range []bool{false, true} {
		t.Run(map[bool]string{false: "cut", true: "one way"}[oneWay], func(t *testing.T) { testCableFallback(t, oneWay) })
	}
}

func testCableFallback(t *testing.T, oneWay bool) {
	synctest.Test(t, func(t *testing.T) {
		fast := transporttest.NewNetwork(transporttest.Options{})
		slow := transporttest.NewNetwork(transporttest.Options{})
		skey, ckey := mustKey(t), mustKey(t)
		sfast, sslow := fast.Conn("server-fast"), slow.Conn("server-slow")
		cfast, cslow := fast.Conn("client-fast"), slow.Conn("client-slow")
		run := func(cfg Config, conns ...transport.Conn) *site {
			cfg.Logger = quiet
			port := bridgeiftest.NewPort(4096)
			c, err := New(cfg, port, conns)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			s := &site{cable: c, port: port, stop: cancel, done: make(chan error, 1)}
			go func() { s.done <- c.Run(ctx) }()
			return s
		}
		at := func(name string) func() (transport.Addr, error) {
			return func() (transport.Addr, error) { return transporttest.Addr(name), nil }
		}
		server := run(Config{PrivateKey: skey, PSK: psk(7), Responder: true, AllowAny: true}, sfast, sslow)
		client := run(Config{PrivateKey: ckey, PSK: psk(7), Peers: []PeerConfig{{
			Name: "server", PublicKey: skey.Public(),
			Dial:     &Dialer{Conn: cfast, Resolve: at("server-fast")},
			Fallback: []*Dialer{{Conn: cslow, Resolve: at("server-slow")}},
		}}}, cfast, cslow)
		defer client.close(t)
		defer server.close(t)
		waitUp(t, client, 1)
		exchange(t, server, client, 5)
		if a := client.cable.Status().Peers[0].Addr; a != "server-fast" {
			t.Fatalf("first path %q, want server-fast", a)
		}

		// flowsVia sends frames until one arrives with the client's path on
		// addr, for at most limit; it returns how long that took.
		seq := uint32(100)
		flowsVia := func(addr string, limit time.Duration) time.Duration {
			start := time.Now()
			for time.Since(start) < limit {
				seq++
				client.port.Inject(testFrame(0xaa, 0xbb, seq, 100))
				if oneWay { // traffic from the server flows on
					server.port.Inject(testFrame(0xbb, 0xaa, seq, 100))
				}
				select {
				case <-server.port.Frames():
					if client.cable.Status().Peers[0].Addr == addr {
						d := time.Since(start)
						time.Sleep(time.Second) // the server's frames in flight arrive
						for len(client.port.Frames()) > 0 {
							<-client.port.Frames()
						}
						return d
					}
				case <-time.After(500 * time.Millisecond):
				}
				time.Sleep(100 * time.Millisecond)  // lets the bubble's clock run
				for len(client.port.Frames()) > 0 { // the server's, if any
					<-client.port.Frames()
				}
			}
			t.Fatalf("frames did not flow via %s within %v: %+v", addr, limit, client.cable.Status().Peers[0])
			return 0
		}

		if oneWay {
			// Only the server's receiving side is cut: its packets
			// still reach the client, but say less and less that the
			// server hears it.
			sfast.SetDeaf(true)
		} else {
			cfast.SetDown(true)
			sfast.SetDown(true)
		}
		d := flowsVia("server-slow", 60*time.Second)
		t.Logf("fell back in %v", d)
		// Stale after heardWindow (the server's packets stop saying it
		// hears the client) and staleAfter, then one handshake over the
		// dead transport (1 s ±20 %), ticks, and the fallback's own.
		if limit := heardWindow + staleAfter + 2*time.Second; d > limit {
			t.Errorf("fallback took %v, want under %v", d, limit)
		}
		st := server.cable.Status()
		if len(st.Peers) != 1 || st.Peers[0].MACs == 0 || st.Peers[0].Addr != "client-slow" {
			t.Fatalf("server after the fallback: %+v", st.Peers)
		}
		exchange(t, server, client, 5)

		sfast.SetDeaf(false)
		cfast.SetDown(false)
		sfast.SetDown(false)
		d = flowsVia("server-fast", 60*time.Second)
		t.Logf("returned in %v", d)
		if d > preferRecheck+10*time.Second {
			t.Errorf("return took %v, want under %v", d, preferRecheck+10*time.Second)
		}
		exchange(t, server, client, 5)
		if st := server.cable.Status(); len(st.Peers) != 1 || st.Peers[0].Addr != "client-fast" {
			t.Fatalf("server after the return: %+v", st.Peers)
		}
	})
}

// TestCableHealthy: a running cable is healthy; one whose Run has ended is
// not, so a watchdog stops being petted.
func TestCableHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		s := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(9), Responder: true, AllowAny: true}, n.Conn("server"))
		time.Sleep(time.Second)
		if !s.cable.Healthy() {
			t.Fatal("a running cable is not healthy")
		}
		s.close(t)
		if s.cable.Healthy() {
			t.Fatal("a stopped cable is healthy")
		}
	})
}
