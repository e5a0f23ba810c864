package cab

import (
	"context"
	"testing"
	"time"

	"cab/bridgeif/bridgeiftest"
	"cab/crypto"
	"cab/transport"
	"cab/transport/udp"
)

// TestCookieUnderLoad: a responder under load answers an initiation
// without mac2 with a 64-byte cookie reply and no Diffie-Hellman; a real
// client takes the cookie, sends its initiation again with mac2, and comes
// up. On loopback UDP, whose addrs name their host.
func TestCookieUnderLoad(t *testing.T) {
	sconn, cconn, saddr := pairConns(t, true)
	skey := mustKey(t)
	srv, err := New(Config{PrivateKey: skey, PSK: psk(3), Responder: true, AllowAny: true, Logger: quiet},
		bridgeiftest.NewPort(64), []transport.Conn{sconn})
	if err != nil {
		t.Fatal(err)
	}
	srv.forceLoad = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	server := &site{cable: srv, stop: cancel, done: done}
	t.Cleanup(func() { server.close(t) })

	// A sender that never reads its cookie: a reply of 64 bytes, no
	// handshake response, no peer.
	evil, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	_, msg1, err := crypto.NewInitiator(mustKey(t), skey.Public(), psk(3), 7, crypto.LocalCiphers(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := evil.WriteBatch([]transport.Packet{{B: msg1, Addr: saddr}}); err != nil {
		t.Fatal(err)
	}
	ps := []transport.Packet{{B: make([]byte, 2048)}}
	n, err := evil.ReadBatch(ps)
	if err != nil || n != 1 {
		t.Fatalf("no answer: %v", err)
	}
	if typ, _, _ := crypto.ParseHeader(ps[0].B); typ != crypto.TypeCookie || len(ps[0].B) != crypto.CookieReplyLen || len(ps[0].B) > len(msg1) {
		t.Fatalf("answered type %d, %d bytes, to a %d-byte initiation without mac2; want a cookie reply", typ, len(ps[0].B), len(msg1))
	}
	if len(srv.Status().Peers) != 0 || srv.halfOpenLen() != 0 {
		t.Fatal("the responder kept state for an initiation it answered with a cookie")
	}

	client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(3), Peers: []PeerConfig{{
		PublicKey: skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return saddr, nil }},
	}}}, cconn)
	waitUp(t, client, 1)
	if got := dropCount(server, "cookie sent"); got < 2 {
		t.Fatalf("%d cookie replies sent; want one to the stranger and one to the client", got)
	}
	f := testFrame(0xee, 0x10, 1, 100)
	client.port.Inject(f)
	server.port = srv.port.(*bridgeiftest.Port)
	expectFrames(t, server.port, [][]byte{f})
}
