package cab

import (
	"net"
	"testing"
	"testing/synctest"
	"time"

	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// TestSetPeers: a live change of a server's peers. The unchanged client
// keeps its session (no new handshake) and loses no frame; the removed one
// goes down and gets nothing through; the added one comes up.
func TestSetPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		keys := []crypto.PrivateKey{mustKey(t), mustKey(t), mustKey(t)}
		peersOf := func(idx ...int) []PeerConfig {
			var ps []PeerConfig
			for _, i := range idx {
				ps = append(ps, PeerConfig{Name: "c" + itoa(i), PublicKey: keys[i].Public()})
			}
			return ps
		}
		server := startSite(t, Config{PrivateKey: skey, Responder: true, Peers: peersOf(0, 1)}, n.Conn("server"))
		var clients []*site
		for i := range keys {
			conn := n.Conn("c" + itoa(i))
			clients = append(clients, startSite(t, Config{PrivateKey: keys[i], Peers: []PeerConfig{{
				Name: "server", PublicKey: skey.Public(),
				Dial: &Dialer{Conn: conn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
			}}}, conn))
		}
		waitUp(t, clients[0], 1)
		waitUp(t, clients[1], 1)
		exchange(t, server, clients[0], 5)
		hs := peerStatus(server, "c0").Handshakes

		added, removed, err := server.cable.SetPeers(peersOf(0, 2))
		if err != nil || added != 1 || removed != 1 {
			t.Fatalf("SetPeers: +%d -%d %v", added, removed, err)
		}
		// c0 at once, without a new handshake and without loss.
		exchange(t, server, clients[0], 20)
		if p := peerStatus(server, "c0"); p.Handshakes != hs || !p.Up {
			t.Errorf("c0 after the reload: %+v, want up with %d handshakes", p, hs)
		}
		if p := peerStatus(server, "c1"); p.Name != "" {
			t.Errorf("c1 still listed: %+v", p)
		}
		waitUp(t, clients[2], 1)
		exchange(t, server, clients[2], 5)
		// c1 gets nothing through any more.
		clients[1].port.Inject(testFrame(0xaa, 0xb1, 1, 100))
		time.Sleep(30 * time.Second)
		for len(server.port.Frames()) > 0 {
			if f := <-server.port.Frames(); f[11] == 0xb1 {
				t.Fatal("a frame from the removed client arrived")
			}
		}
		if _, _, err := server.cable.SetPeers(append(peersOf(0), peersOf(0)...)); err == nil {
			t.Error("a peer listed twice was taken")
		}
	})
}

// peerStatus returns the status of s's peer called name (zero if none).
func peerStatus(s *site, name string) PeerStatus {
	for _, p := range s.cable.Status().Peers {
		if p.Name == name {
			return p
		}
	}
	return PeerStatus{}
}

// TestPeerSettings: a peer's own PSK (a client with another PSK never
// comes up), its allowed source MACs (other frames are dropped and counted
// as not allowed), and its own keepalive.
func TestPeerSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		k0, k1 := mustKey(t), mustKey(t)
		allowed := net.HardwareAddr{2, 0, 0, 0, 0, 0xbb}
		server := startSite(t, Config{PrivateKey: skey, Responder: true, Peers: []PeerConfig{
			{Name: "c0", PublicKey: k0.Public(), PSK: psk(1), AllowedMACs: []net.HardwareAddr{allowed}, Keepalive: time.Second},
			{Name: "c1", PublicKey: k1.Public(), PSK: psk(1)},
		}}, n.Conn("server"))
		client := func(name string, k crypto.PrivateKey, secret *crypto.Secret) *site {
			conn := n.Conn(name)
			return startSite(t, Config{PrivateKey: k, PSK: secret, Peers: []PeerConfig{{
				Name: "server", PublicKey: skey.Public(),
				Dial: &Dialer{Conn: conn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
			}}}, conn)
		}
		c0 := client("c0", k0, psk(1))
		c1 := client("c1", k1, psk(2)) // the wrong PSK
		waitUp(t, c0, 1)
		exchange(t, server, c0, 3) // frames from 02:..:bb
		c0.port.Inject(testFrame(0xaa, 0xcc, 99, 100))
		time.Sleep(time.Second)
		for len(server.port.Frames()) > 0 {
			if f := <-server.port.Frames(); f[11] == 0xcc {
				t.Fatal("a frame from a MAC the peer may not use arrived")
			}
		}
		if d := peerStatus(server, "c0").Drops["not allowed"]; d != 1 {
			t.Errorf("not allowed drops = %d, want 1", d)
		}
		// c0's own keepalive on the server is 1 s: silent for 3 of them
		// and 5 s more, it is down, long before the cable-wide 25 s would say.
		time.Sleep(10 * time.Second)
		if peerStatus(server, "c0").Up {
			t.Error("c0 is still up after 10 s of silence with a 1 s keepalive")
		}
		time.Sleep(20 * time.Second)
		if c1.cable.Status().Peers[0].Up || peerStatus(server, "c1").Up {
			t.Error("a client with the wrong PSK came up")
		}
	})
}
