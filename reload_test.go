package cab

import (
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
