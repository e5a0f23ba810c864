package cab

import (
	"fmt"

	"testing"
	"time"

	"cab/bridgeif/bridgeiftest"

	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// TestStrangersKeepNothing: 1100 initiations from senders that do not hold
// the PSK (message 1 needs only the server's public key) leave no peer
// behind; the half-open table stays bounded; a real PSK client still comes
// up. Before the half-open table, each initiation made a permanent peer and
// the 1025th filled the table for good.
func TestStrangersKeepNothing(t *testing.T) {
	n := transporttest.NewNetwork(transporttest.Options{Queue: 4096})
	skey := mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(6), Responder: true, AllowAny: true}, n.Conn("server"))
	for i := 0; i < 1100; i++ {
		_, msg1, err := crypto.NewInitiator(mustKey(t), skey.Public(), psk(66), uint32(i+1), crypto.LocalCiphers(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		evil := n.Conn(fmt.Sprintf("evil%d", i%300)) // 300 sources
		if err := evil.WriteBatch([]transport.Packet{{B: msg1, Addr: transporttest.Addr("server")}}); err != nil {
			t.Fatal(err)
		}
	}
	// Every initiation was handled (answered, rate limited or refused).
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := server.cable.Status()
		handled := st.Drops["rate limited"] + st.Drops["not allowed"]
		server.cable.pmu.Lock()
		half := len(server.cable.half.order)
		server.cable.pmu.Unlock()
		if half > maxHalfOpen {
			t.Fatalf("%d half-open peers, more than %d", half, maxHalfOpen)
		}
		if uint64(half)+handled >= 1100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(server.cable.Status().Peers); got != 0 {
		t.Fatalf("%d peers made by initiations without the PSK", got)
	}
	cconn := n.Conn("client")
	client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(6), Peers: []PeerConfig{{
		PublicKey: skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
	}}}, cconn)
	waitUp(t, client, 1)
	waitUp(t, server, 1)
	if got := len(server.cable.Status().Peers); got != 1 {
		t.Fatalf("%d peers after one real client, want 1", got)
	}
}

// TestHalfOpenPerSource: one source gets halfOpenPerSource half-open peers
// and no more, however many keys it invents.
func TestHalfOpenPerSource(t *testing.T) {
	c, err := New(Config{PrivateKey: mustKey(t), PSK: psk(1), Responder: true, AllowAny: true, Logger: quiet}, bridgeiftest.NewPort(16), nil)
	if err != nil {
		t.Fatal(err)
	}
	one, other := sourceOf(transporttest.Addr("a")), sourceOf(transporttest.Addr("b"))
	got := 0
	for i := 0; i < 100; i++ {
		p, allowed := c.peerFor(mustKey(t).Public(), one)
		if p != nil {
			got++
		} else if !allowed {
			t.Fatal("a key AllowAny allows was not allowed")
		}
	}
	if got != halfOpenPerSource {
		t.Fatalf("one source got %d half-open peers, want %d", got, halfOpenPerSource)
	}
	if p, _ := c.peerFor(mustKey(t).Public(), other); p == nil {
		t.Fatal("another source was refused")
	}
	if len(c.peerList()) != 0 {
		t.Fatal("half-open peers in the peer table")
	}
}

// TestDynamicPeerEviction: with the table full, a new PSK client pushes
// out the dynamic peer heard from least recently; a peer listed by key
// stays.
func TestDynamicPeerEviction(t *testing.T) {
	n := transporttest.NewNetwork(transporttest.Options{})
	skey, listed := mustKey(t), mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(6), Responder: true, AllowAny: true, MaxPeers: 2,
		Peers: []PeerConfig{{PublicKey: listed.Public(), Name: "listed"}}}, n.Conn("server"))
	dial := func(key crypto.PrivateKey, name string) *site {
		cconn := n.Conn(name)
		return startSite(t, Config{PrivateKey: key, PSK: psk(6), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
	}
	l := dial(listed, "l")
	waitUp(t, l, 1)
	a := dial(mustKey(t), "a")
	waitUp(t, a, 1)
	a.close(t)
	b := dial(mustKey(t), "b")
	waitUp(t, b, 1)
	// The server takes b in when b's first packet after the handshake
	// arrives, just after b is up.
	keys := map[string]bool{}
	for deadline := time.Now().Add(5 * time.Second); !keys[keyOf(b)] && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		clear(keys)
		for _, p := range server.cable.Status().Peers {
			keys[p.PublicKey] = true
		}
	}
	if !keys[listed.Public().String()] || !keys[keyOf(b)] || keys[keyOf(a)] || len(keys) != 2 {
		t.Fatalf("peers after eviction: %v; want the listed one and b", keys)
	}
}
