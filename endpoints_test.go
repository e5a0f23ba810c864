package cab

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"cab/transport"
	"cab/transport/transporttest"
)

// TestEndpointsFailover: a client with two endpoints, two hubs that share
// the server's key, over one conn, with DeadAfter: when the first hub
// dies, frames flow through the second within DeadAfter and a handshake
// or two; the client stays there through rekeys while the first is dead,
// and goes back to the first once it is back.
func TestEndpointsFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		hub := func(name string) *site {
			return startSite(t, Config{PrivateKey: skey, PSK: psk(19), Responder: true, AllowAny: true, DeadAfter: time.Second}, n.Conn(name))
		}
		at := func(name string) func() (transport.Addr, error) {
			return func() (transport.Addr, error) { return transporttest.Addr(name), nil }
		}
		hubA, hubB := hub("hub-a"), hub("hub-b")
		cconn := n.Conn("client")
		var logs syncLog
		client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(19), DeadAfter: time.Second, Logger: logTo(&logs), Peers: []PeerConfig{{
			Name: "hub", PublicKey: skey.Public(),
			Dial:     &Dialer{Conn: cconn, Resolve: at("hub-a")},
			Fallback: []*Dialer{{Conn: cconn, Resolve: at("hub-b")}},
		}}}, cconn)
		waitUp(t, client, 1)
		exchange(t, hubA, client, 3)

		// reaches sends a frame a second from the client until one arrives
		// at s, for at most limit, and returns how long that took.
		seq := uint32(0)
		reaches := func(s *site, limit time.Duration) time.Duration {
			start := time.Now()
			for time.Since(start) < limit {
				seq++
				client.port.Inject(testFrame(0xaa, 0xbb, seq, 100))
				select {
				case <-s.port.Frames():
					return time.Since(start)
				case <-time.After(100 * time.Millisecond):
				}
			}
			t.Fatalf("no frame reached the hub within %v: %+v", limit, client.cable.Status().Peers[0])
			return 0
		}
		hubA.close(t) // hub A dies
		d := reaches(hubB, 30*time.Second)
		t.Logf("frames through hub B %v after hub A died (DeadAfter 1s)", d)
		if limit := time.Second + 4*time.Second; d > limit {
			t.Errorf("failover took %v, want within %v", d, limit)
		}
		// Rekeys while hub A is dead keep the client on hub B.
		for i := 0; i < 40; i++ {
			time.Sleep(10 * time.Second)
			client.port.Inject(testFrame(0xaa, 0xbb, 1000+uint32(i), 100))
			select {
			case <-hubB.port.Frames():
			case <-time.After(5 * time.Second):
				t.Fatalf("after %d s on hub B a frame did not arrive: %+v", (i+1)*10, client.cable.Status().Peers[0])
			}
		}
		if st := client.cable.Status().Peers[0]; st.Handshakes < 4 || st.Addr != "hub-b" {
			t.Errorf("after 400 s: %d handshakes, on %s; want rekeys, on hub-b", st.Handshakes, st.Addr)
		}
		// Hub A is back: the client returns to it.
		hubA = hub("hub-a")
		d = reaches(hubA, 60*time.Second)
		t.Logf("back on hub A %v after it returned", d)
		if limit := preferRecheck + 5*time.Second; d > limit {
			t.Errorf("return to hub A took %v, want within %v", d, limit)
		}
		if !strings.Contains(logs.String(), `msg="transport changed" peer=hub from=hub-b to=hub-a`) {
			t.Errorf("no log of the return to hub A:\n%s", logs.String())
		}
		hubA.close(t)
		hubB.close(t)
		client.close(t)
	})
}
