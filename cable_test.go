package cab

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
	"cab/transport/udp"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func mustKey(t testing.TB) crypto.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testFrame returns an IPv4-typed frame from MAC 02:..:src to 02:..:dst
// carrying seq.
func testFrame(dst, src byte, seq uint32, size int) []byte {
	b := make([]byte, size)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, dst})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, src})
	b[12], b[13] = 0x08, 0x00
	binary.BigEndian.PutUint32(b[14:], seq)
	for i := 18; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

// site is one cable under test with its fake port.
type site struct {
	cable  *Cable
	port   *bridgeiftest.Port
	stop   context.CancelFunc
	done   chan error
	closed bool
}

func startSite(t testing.TB, cfg Config, conn transport.Conn) *site {
	t.Helper()
	return startSiteWith(t, cfg, conn, bridgeiftest.NewPort(4096))
}

// startSiteNoPort starts a cable with no port of its own (PortPerPeer).
func startSiteNoPort(t testing.TB, cfg Config, conn transport.Conn) *site {
	t.Helper()
	return startSiteWith(t, cfg, conn, nil)
}

func startSiteWith(t testing.TB, cfg Config, conn transport.Conn, port *bridgeiftest.Port) *site {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	var bp bridgeif.Port
	if port != nil {
		bp = port
	}
	c, err := New(cfg, bp, []transport.Conn{conn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &site{cable: c, port: port, stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- c.Run(ctx) }()
	t.Cleanup(func() { s.close(t) })
	return s
}

// close stops the site's cable and waits for Run to return; a second call
// does nothing.
func (s *site) close(t testing.TB) {
	t.Helper()
	if s.closed {
		return
	}
	s.closed = true
	s.stop()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// waitUp waits until every peer of s is up.
func waitUp(t testing.TB, s *site, peers int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		st := s.cable.Status()
		up := 0
		for _, p := range st.Peers {
			if p.Up {
				up++
			}
		}
		if up >= peers {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("peers not up: %+v", s.cable.Status())
}

// expectFrames reads want frames from port, in order.
func expectFrames(t testing.TB, port *bridgeiftest.Port, want [][]byte) {
	t.Helper()
	for i, w := range want {
		select {
		case got := <-port.Frames():
			if !bytes.Equal(got, w) {
				t.Fatalf("frame %d: got % x..., want % x...", i, got[:min(len(got), 20)], w[:min(len(w), 20)])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d of %d did not arrive", i, len(want))
		}
	}
}

func expectNoFrame(t testing.TB, port *bridgeiftest.Port, wait time.Duration) {
	t.Helper()
	select {
	case got := <-port.Frames():
		t.Fatalf("unexpected frame % x", got[:min(len(got), 20)])
	case <-time.After(wait):
	}
}

// pairConns returns a server conn, a client conn and the server's addr as
// the client sees it: on the in-memory network, or on loopback UDP.
func pairConns(t testing.TB, real bool) (sconn, cconn transport.Conn, saddr transport.Addr) {
	t.Helper()
	if !real {
		n := transporttest.NewNetwork(transporttest.Options{})
		return n.Conn("server"), n.Conn("client"), transporttest.Addr("server")
	}
	s, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := udp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s, c, udp.Addr{AddrPort: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.LocalAddr().Port())}
}

type pairOpts struct {
	real        bool
	serverPSK   *crypto.Secret
	clientPSK   *crypto.Secret
	allowClient bool // public-key mode: the server lists the client
	clientKey   crypto.PrivateKey
	workers     int // Config.CryptoWorkers of both sides
}

// startPair starts a server and a client cable joined by conns.
func startPair(t testing.TB, o pairOpts) (server, client *site) {
	t.Helper()
	sconn, cconn, saddr := pairConns(t, o.real)
	skey := mustKey(t)
	ckey := o.clientKey
	if ckey == (crypto.PrivateKey{}) {
		ckey = mustKey(t)
	}
	scfg := Config{PrivateKey: skey, PSK: o.serverPSK, Responder: true, CryptoWorkers: o.workers}
	if o.allowClient {
		scfg.Peers = []PeerConfig{{Name: "client", PublicKey: ckey.Public()}}
	} else if o.serverPSK != nil {
		scfg.AllowAny = true
	}
	ccfg := Config{PrivateKey: ckey, PSK: o.clientPSK, CryptoWorkers: o.workers, Peers: []PeerConfig{{
		Name: "server", PublicKey: skey.Public(),
		Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return saddr, nil }},
	}}}
	server = startSite(t, scfg, sconn)
	client = startSite(t, ccfg, cconn)
	return server, client
}

func psk(b byte) *crypto.Secret {
	var s crypto.Secret
	for i := range s {
		s[i] = b + byte(i)
	}
	return &s
}

// exchange sends n frames each way and checks they arrive intact and in
// order.
func exchange(t testing.TB, server, client *site, n int) {
	t.Helper()
	var toServer, toClient [][]byte
	for i := 0; i < n; i++ {
		f := testFrame(0xaa, 0xbb, uint32(i), 60+i*13%1400)
		toServer = append(toServer, f)
		if err := client.port.Inject(f); err != nil {
			t.Fatal(err)
		}
	}
	expectFrames(t, server.port, toServer)
	for i := 0; i < n; i++ {
		f := testFrame(0xbb, 0xaa, uint32(i), 60+i*7%1400)
		toClient = append(toClient, f)
		if err := server.port.Inject(f); err != nil {
			t.Fatal(err)
		}
	}
	expectFrames(t, client.port, toClient)
}

// TestCableEndToEnd is the same scenario on the in-memory fakes and on
// loopback UDP, in PSK-only mode and public-key mode.
func TestCableEndToEnd(t *testing.T) {
	transporttest.CheckLeaks(t)
	for _, real := range []bool{false, true} {
		for _, mode := range []string{"psk", "pubkey", "pubkey+psk"} {
			t.Run(fmt.Sprintf("real=%v/%s", real, mode), func(t *testing.T) {
				o := pairOpts{real: real}
				switch mode {
				case "psk":
					o.serverPSK, o.clientPSK = psk(1), psk(1)
				case "pubkey":
					o.allowClient = true
				case "pubkey+psk":
					o.allowClient = true
					o.serverPSK, o.clientPSK = psk(1), psk(1)
				}
				server, client := startPair(t, o)
				defer server.close(t)
				defer client.close(t)
				waitUp(t, client, 1)
				exchange(t, server, client, 200)
				waitUp(t, server, 1)
				st := server.cable.Status()
				if st.Peers[0].RxFrames != 200 || st.Peers[0].TxFrames != 200 {
					t.Errorf("server counters: rx %d tx %d, want 200 each", st.Peers[0].RxFrames, st.Peers[0].TxFrames)
				}
			})
		}
	}
}

// TestCableRefusesStrangers: a wrong PSK or an unlisted key gets nothing
// through, and nothing back.
func TestCableRefusesStrangers(t *testing.T) {
	cases := map[string]pairOpts{
		"wrong psk":      {serverPSK: psk(1), clientPSK: psk(2)},
		"unlisted key":   {},
		"psk, no client": {serverPSK: psk(1)},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				server, client := startPair(t, o)
				for i := 0; i < 10; i++ {
					client.port.Inject(testFrame(0xaa, 0xbb, uint32(i), 100))
					server.port.Inject(testFrame(0xbb, 0xaa, uint32(i), 100))
					time.Sleep(time.Second)
				}
				expectNoFrame(t, server.port, 10*time.Second)
				expectNoFrame(t, client.port, time.Second)
				for _, s := range []*site{server, client} {
					for _, p := range s.cable.Status().Peers {
						if p.Up || p.Handshakes != 0 {
							t.Errorf("peer %s: up=%v handshakes=%d, want down and none", p.Name, p.Up, p.Handshakes)
						}
					}
				}
				client.close(t)
				server.close(t)
			})
		})
	}
}

// TestCableReconnects: a server that restarts (losing its sessions) gets
// its client back by itself.
func TestCableReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey, ckey := mustKey(t), mustKey(t)
		scfg := Config{PrivateKey: skey, PSK: psk(3), Responder: true, AllowAny: true}
		server := startSite(t, scfg, n.Conn("server"))
		cconn := n.Conn("client")
		client := startSite(t, Config{PrivateKey: ckey, PSK: psk(3), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
		waitUp(t, client, 1)
		exchange(t, server, client, 5)

		server.close(t)
		time.Sleep(20 * time.Second) // the server is down for a while
		server = startSite(t, scfg, n.Conn("server"))
		// The client keeps sending; within a few seconds of the server's
		// return the frames flow again.
		start := time.Now()
		var got bool
		for i := 0; i < 60 && !got; i++ {
			client.port.Inject(testFrame(0xaa, 0xbb, uint32(i), 100))
			select {
			case <-server.port.Frames():
				got = true
			case <-time.After(time.Second):
			}
		}
		if !got {
			t.Fatal("client did not reconnect within 60 s")
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("reconnect took %v, want under 15 s", d)
		}
		client.close(t)
		server.close(t)
	})
}

// TestCableRekeys: sessions are replaced every RekeyAfterTime without
// losing frames, and a silent client is declared down.
func TestCableRekeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		server, client := startPair(t, pairOpts{serverPSK: psk(4), clientPSK: psk(4)})
		waitUp(t, client, 1)
		for i := 0; i < 40; i++ { // 400 s of traffic
			exchange(t, server, client, 1)
			time.Sleep(10 * time.Second)
		}
		hs := client.cable.Status().Peers[0].Handshakes
		if hs < 3 {
			t.Errorf("client made %d handshakes in 400 s, want >= 3 (rekey every %v)", hs, crypto.RekeyAfterTime)
		}
		for _, s := range []*site{server, client} {
			if d := s.cable.Status().Peers[0].Drops; d["no session"] != 0 || d["auth"] != 0 || d["replay"] != 0 {
				t.Errorf("drops during rekeys: %v", d)
			}
		}
		client.close(t)
		time.Sleep(3*DefaultKeepalive + crypto.RekeyTimeout + 2*time.Second)
		if server.cable.Status().Peers[0].Up {
			t.Error("server still shows the stopped client up")
		}
		server.close(t)
	})
}

// TestCableDropsGarbage: malformed, truncated and forged packets are
// dropped and counted; the cable keeps working.
func TestCableDropsGarbage(t *testing.T) {
	n := transporttest.NewNetwork(transporttest.Options{})
	server, client := startPairOn(t, n)
	defer server.close(t)
	defer client.close(t)
	waitUp(t, client, 1)
	evil := n.Conn("evil")
	junk := [][]byte{
		{},
		{crypto.TypeData},
		make([]byte, crypto.HeaderLen),
		append([]byte{crypto.TypeData, 0, 0, 0, 1, 2, 3, 4}, make([]byte, 100)...),
		append([]byte{crypto.TypeInit}, make([]byte, 200)...),
		append([]byte{crypto.TypeResponse}, make([]byte, 100)...),
		{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9},
		make([]byte, 9000),
	}
	var ps []transport.Packet
	for i := 0; i < 50; i++ {
		for _, j := range junk {
			ps = append(ps, transport.Packet{B: j, Addr: transporttest.Addr("server")})
		}
	}
	if err := evil.WriteBatch(ps); err != nil {
		t.Fatal(err)
	}
	exchange(t, server, client, 20)
	var total uint64
	for _, v := range server.cable.Status().Drops {
		total += v
	}
	if total < uint64(len(ps))/2 {
		t.Errorf("server counted %d drops for %d junk packets", total, len(ps))
	}
}

func startPairOn(t testing.TB, n *transporttest.Network) (server, client *site) {
	skey, ckey := mustKey(t), mustKey(t)
	server = startSite(t, Config{PrivateKey: skey, PSK: psk(5), Responder: true, AllowAny: true}, n.Conn("server"))
	cconn := n.Conn("client")
	client = startSite(t, Config{PrivateKey: ckey, PSK: psk(5), Peers: []PeerConfig{{
		PublicKey: skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
	}}}, cconn)
	return server, client
}

// TestCableFanIn: clients reach each other through the server.
func TestCableFanIn(t *testing.T) {
	transporttest.CheckLeaks(t)
	n := transporttest.NewNetwork(transporttest.Options{})
	skey := mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(6), Responder: true, AllowAny: true}, n.Conn("server"))
	defer server.close(t)
	var clients []*site
	var mu sync.Mutex
	for i := 0; i < 5; i++ {
		cconn := n.Conn(fmt.Sprintf("c%d", i))
		c := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(6), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
		defer c.close(t)
		mu.Lock()
		clients = append(clients, c)
		mu.Unlock()
	}
	for _, c := range clients {
		waitUp(t, c, 1)
	}
	waitUp(t, server, 5)
	// Each client announces its MAC with a broadcast; everyone else and the
	// server's port see it.
	for i, c := range clients {
		before := txFrames(server)
		b := testFrame(0xff, byte(0x10+i), 0, 64)
		copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		c.port.Inject(b)
		expectFrames(t, server.port, [][]byte{b})
		for j, o := range clients {
			if j != i {
				expectFrames(t, o.port, [][]byte{b})
			}
		}
		// The flood sealed a copy for every other client in the same
		// pass (all arrived): none was sealed for the sender.
		after := txFrames(server)
		if after[keyOf(c)] != before[keyOf(c)] {
			t.Fatalf("split horizon: the server sent client %d's broadcast back to it", i)
		}
		expectNoFrame(t, c.port, 50*time.Millisecond)
	}
	// Now unicast goes only where the MAC lives.
	before := txFrames(server)
	f := testFrame(0x13, 0x10, 1, 100)
	clients[0].port.Inject(f)
	expectFrames(t, clients[3].port, [][]byte{f})
	after := txFrames(server)
	for j, o := range clients {
		if want := before[keyOf(o)] + map[bool]uint64{true: 1}[j == 3]; after[keyOf(o)] != want {
			t.Fatalf("unicast to client 3: the server sent client %d %d frames, want %d", j, after[keyOf(o)]-before[keyOf(o)], want-before[keyOf(o)])
		}
		if j != 3 {
			expectNoFrame(t, o.port, 50*time.Millisecond)
		}
	}
	expectNoFrame(t, server.port, 50*time.Millisecond)
}

// TestCableSlowPath: on a path whose round trip (3 s) is longer than the
// first handshake retry (about 1 s), the answer to an earlier initiation
// still completes the handshake.
func TestCableSlowPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{Delay: 1500 * time.Millisecond})
		skey := mustKey(t)
		server := startSite(t, Config{PrivateKey: skey, PSK: psk(11), Responder: true, AllowAny: true}, n.Conn("server"))
		cconn := n.Conn("client")
		client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(11), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
		start := time.Now()
		waitUp(t, client, 1)
		if d := time.Since(start); d > 4500*time.Millisecond {
			t.Errorf("handshake over a 3 s round trip took %v; the first answer arrives after 3 s", d)
		}
		exchange(t, server, client, 3)
	})
}

// dropCount returns how many drops for reason s's cable counted, against
// any peer or none.
func dropCount(s *site, reason string) uint64 {
	st := s.cable.Status()
	n := st.Drops[reason]
	for _, p := range st.Peers {
		n += p.Drops[reason]
	}
	return n
}

// waitDrops waits until s's cable has counted more than before drops for
// reason: proof that the frame in question was handled, and dropped, so a
// check that nothing arrived is not merely a check that nothing arrived
// yet.
func waitDrops(t testing.TB, s *site, reason string, before uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for dropCount(s, reason) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("no %q drop counted (still %d)", reason, before)
		}
		time.Sleep(time.Millisecond)
	}
}

// txFrames returns the frames s's cable has sent to each peer, by public
// key.
func txFrames(s *site) map[string]uint64 {
	m := map[string]uint64{}
	for _, p := range s.cable.Status().Peers {
		m[p.PublicKey] = p.TxFrames
	}
	return m
}

// keyOf returns the public key of the site's cable, as Status shows it.
func keyOf(s *site) string { return s.cable.cfg.PrivateKey.Public().String() }

// TestCableVouchesForAuthenticatedAddrs: the cable tells a conn that asks
// (transport.Authenticator) which addrs completed a handshake, and never
// one that did not.
func TestCableVouchesForAuthenticatedAddrs(t *testing.T) {
	n := transporttest.NewNetwork(transporttest.Options{})
	sconn, cconn, stranger := n.Conn("server"), n.Conn("client"), n.Conn("stranger")
	skey := mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(1), Responder: true, AllowAny: true}, sconn)
	defer server.close(t)
	dial := func(c transport.Conn) *Dialer {
		return &Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }}
	}
	client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(1), Peers: []PeerConfig{{Name: "server", PublicKey: skey.Public(), Dial: dial(cconn)}}}, cconn)
	defer client.close(t)
	bad := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(2), Peers: []PeerConfig{{Name: "server", PublicKey: skey.Public(), Dial: dial(stranger)}}}, stranger)
	defer bad.close(t)
	waitUp(t, client, 1)
	exchange(t, server, client, 5)
	if sconn.AuthenticatedCalls(transporttest.Addr("client")) == 0 {
		t.Fatal("the server's conn was never told that the client authenticated")
	}
	if cconn.AuthenticatedCalls(transporttest.Addr("server")) == 0 {
		t.Fatal("the client's conn was never told that the server authenticated")
	}
	time.Sleep(200 * time.Millisecond) // the stranger has tried by now
	if got := sconn.AuthenticatedCalls(transporttest.Addr("stranger")); got != 0 {
		t.Fatalf("the stranger with the wrong PSK was vouched for %d times", got)
	}
	if n := sconn.AuthenticatedCalls(transporttest.Addr("client")); n > 10 {
		t.Fatalf("Authenticated called %d times for 10 frames: it belongs to path changes, not every packet", n)
	}
}
