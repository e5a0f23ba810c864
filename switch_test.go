package cab

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
	"cab/transport"
	"cab/transport/transporttest"
)

// hub is a server cable with clients on one in-memory network.
type hub struct {
	server  *site
	clients []*site
}

func startHub(t testing.TB, n int, mod func(*Config)) *hub {
	t.Helper()
	return startHubWith(t, n, hubOpts{server: mod})
}

// hubOpts shape a hub: its network, changes to the server's and the
// clients' configurations, and a wrapper of the server's conn.
type hubOpts struct {
	net            transporttest.Options // default: a queue of 8192
	server, client func(*Config)
	wrap           func(transport.Conn) transport.Conn
}

// startHubWith is startHub as o says.
func startHubWith(t testing.TB, n int, o hubOpts) *hub {
	t.Helper()
	if o.net.Queue == 0 {
		o.net.Queue = 8192
	}
	net := transporttest.NewNetwork(o.net)
	skey := mustKey(t)
	scfg := Config{PrivateKey: skey, PSK: psk(6), Responder: true, AllowAny: true}
	if o.server != nil {
		o.server(&scfg)
	}
	var sconn transport.Conn = net.Conn("server")
	if o.wrap != nil {
		sconn = o.wrap(sconn)
	}
	h := &hub{server: startSite(t, scfg, sconn)}
	for i := 0; i < n; i++ {
		cconn := net.Conn(fmt.Sprintf("c%d", i))
		ccfg := Config{PrivateKey: mustKey(t), PSK: psk(6), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}
		if o.client != nil {
			o.client(&ccfg)
		}
		h.clients = append(h.clients, startSite(t, ccfg, cconn))
	}
	for _, c := range h.clients {
		waitUp(t, c, 1)
	}
	waitUp(t, h.server, n)
	return h
}

// mac returns client i's MAC byte; the server side's hosts use 0xee.
func mac(i int) byte { return byte(0x10 + i) }

// announce has client i broadcast from its MAC and waits until the server
// port saw it, so the server has learned it.
func (h *hub) announce(t testing.TB, i int) {
	t.Helper()
	b := testFrame(0xff, mac(i), 0, 64)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	h.clients[i].port.Inject(b)
	expectFrames(t, h.server.port, [][]byte{b})
}

func drain(s *site) int {
	n := 0
	for {
		select {
		case <-s.port.Frames():
			n++
		default:
			return n
		}
	}
}

// TestSwitchIsolate: with Isolate, clients reach the server's side only,
// and a client that forges another's MAC gets none of its traffic.
func TestSwitchIsolate(t *testing.T) {
	h := startHub(t, 3, func(c *Config) { c.Isolate = true })
	for i := range h.clients {
		h.announce(t, i)
	}
	// The server saw every broadcast (announce waits for it) and sent no
	// client anything.
	for key, n := range txFrames(h.server) {
		if n != 0 {
			t.Fatalf("isolate: the server flooded %d frames to client %s", n, key[:8])
		}
	}
	for _, c := range h.clients {
		expectNoFrame(t, c.port, 20*time.Millisecond)
	}
	// Client 0 to client 1: dropped.
	isolated := dropCount(h.server, "isolated")
	h.clients[0].port.Inject(testFrame(mac(1), mac(0), 1, 80))
	waitDrops(t, h.server, "isolated", isolated)
	expectNoFrame(t, h.clients[1].port, 100*time.Millisecond)
	// Client 0 to the server's side, and back.
	f := testFrame(0xee, mac(0), 2, 80)
	h.clients[0].port.Inject(f)
	expectFrames(t, h.server.port, [][]byte{f})
	back := testFrame(mac(0), 0xee, 3, 80)
	h.server.port.Inject(back)
	expectFrames(t, h.clients[0].port, [][]byte{back})

	// Client 2 forges client 0's MAC: its frames are dropped, and the
	// server's frames for client 0 still go to client 0.
	conflicts := dropCount(h.server, "mac conflict")
	h.clients[2].port.Inject(testFrame(0xee, mac(0), 4, 80))
	waitDrops(t, h.server, "mac conflict", conflicts)
	expectNoFrame(t, h.server.port, 100*time.Millisecond)
	toVictim := testFrame(mac(0), 0xee, 5, 80)
	h.server.port.Inject(toVictim)
	expectFrames(t, h.clients[0].port, [][]byte{toVictim})
	expectNoFrame(t, h.clients[2].port, 100*time.Millisecond)
}

// TestSwitchFloodLimit: a broadcast storm from one client is capped; the
// other clients' frames keep flowing.
func TestSwitchFloodLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(t, 2, func(c *Config) { c.FloodRate = 100 })
		storm := testFrame(0xff, mac(0), 0, 64)
		copy(storm[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		got := 0
		for round := 0; round < 10; round++ { // 10 s of 1000 broadcasts a second
			for i := 0; i < 1000; i++ {
				for h.clients[0].port.Inject(storm) != nil {
					time.Sleep(time.Millisecond)
				}
				if i%100 == 99 {
					time.Sleep(100 * time.Millisecond)
				}
			}
			// Client 1 still gets its frame through.
			f := testFrame(0xee, mac(1), uint32(round), 64)
			h.clients[1].port.Inject(f)
			deadline := time.After(time.Second)
		wait:
			for {
				select {
				case fr := <-h.server.port.Frames():
					if fr[11] == mac(1) {
						break wait
					}
					got++
				case <-deadline:
					t.Fatalf("round %d: client 1's frame did not arrive during the storm", round)
				}
			}
		}
		time.Sleep(time.Second)
		got += drain(h.server)
		// 100/s with a burst of 200 over ~11 s: at most ~1300 of 10000.
		if got > 1500 || got < 500 {
			t.Errorf("%d storm frames reached the server's port, want about 1200", got)
		}
		if d := h.server.cable.Status().Peers[0].Drops["flood limit"] + h.server.cable.Status().Peers[1].Drops["flood limit"]; d < 8000 {
			t.Errorf("flood-limit drops %d, want >= 8000", d)
		}
	})
}

// TestSwitchMACCap: one client with 10 000 source MACs stays within its
// cap, and the others keep working.
func TestSwitchMACCap(t *testing.T) {
	noFloodLimit := func(c *Config) { c.FloodRate, c.FloodBudget = -1, -1 }
	h := startHubWith(t, 2, hubOpts{server: func(c *Config) { c.MaxMACs = 100; noFloodLimit(c) }, client: noFloodLimit})
	counted := make(chan int)
	go func() { // read as they come, so the fake port's queue never overflows
		got := 0
		for got < 10000 {
			select {
			case <-h.server.port.Frames():
				got++
			case <-time.After(2 * time.Second): // quiet: the rest was lost
				counted <- got
				return
			}
		}
		counted <- got
	}()
	for i := 0; i < 10000; i++ {
		f := testFrame(0xee, 0, uint32(i), 64)
		f[8], f[9], f[10], f[11] = 0x77, byte(i>>16), byte(i>>8), byte(i)
		for h.clients[0].port.Inject(f) != nil {
			time.Sleep(time.Millisecond)
		}
	}
	// The in-memory network drops when a queue is full, like a real one;
	// frames over the MAC cap are still forwarded (only not learned).
	got := <-counted
	if got < 5000 {
		t.Fatalf("%d of 10000 frames reached the server port", got)
	}
	h.announce(t, 1)
	for _, p := range h.server.cable.Status().Peers {
		if p.MACs > 100 {
			t.Errorf("peer %s learned %d MACs, cap 100", p.Name, p.MACs)
		}
	}
	f := testFrame(mac(1), 0xee, 1, 64)
	h.server.port.Inject(f)
	found := false
	for deadline := time.After(10 * time.Second); !found; { // skip the flood client 1 also heard
		select {
		case g := <-h.clients[1].port.Frames():
			found = g[5] == mac(1) && g[11] == 0xee
		case <-deadline:
			t.Fatal("client 1 did not get its frame")
		}
	}
	if d := h.server.cable.Status().Peers[0].Drops["mac limit"] + h.server.cable.Status().Peers[1].Drops["mac limit"]; d < uint64(got-100) {
		t.Errorf("mac limit drops %d, want >= %d", d, got-100)
	}
}

// TestSwitchAging: a learned MAC is forgotten after FDBMaxAge of silence,
// and a peer that goes down takes its MACs with it.
func TestSwitchAging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(t, 2, func(c *Config) { c.FDBMaxAge = 30 * time.Second })
		h.announce(t, 0)
		h.announce(t, 1)
		if _, ok := h.server.cable.def.fdb.lookup(macKey{mac: [6]byte{2, 0, 0, 0, 0, mac(0)}}); !ok {
			t.Fatal("client 0's MAC not learned")
		}
		time.Sleep(35 * time.Second)
		if _, ok := h.server.cable.def.fdb.lookup(macKey{mac: [6]byte{2, 0, 0, 0, 0, mac(0)}}); ok {
			t.Fatal("client 0's MAC not aged out after 35 s of silence")
		}
		h.announce(t, 1)
		h.clients[1].close(t)
		time.Sleep(3*DefaultKeepalive + 10*time.Second)
		if h.server.cable.def.fdb.len() != 0 {
			t.Fatalf("%d fdb entries left after the client went down: %v", h.server.cable.def.fdb.len(), h.server.cable.FDB())
		}
	})
}

// TestSwitchBPDU: BPDUs pass by default and are dropped with DropBPDU.
func TestSwitchBPDU(t *testing.T) {
	bpdu := testFrame(0, mac(0), 0, 64)
	copy(bpdu[0:6], []byte{0x01, 0x80, 0xc2, 0, 0, 0})
	for _, drop := range []bool{false, true} {
		h := startHub(t, 1, func(c *Config) { c.DropBPDU = drop })
		if err := h.clients[0].port.Inject(bpdu); err != nil {
			t.Fatal(err)
		}
		if drop {
			waitDrops(t, h.server, "bpdu", 0)
			expectNoFrame(t, h.server.port, 100*time.Millisecond)
		} else {
			expectFrames(t, h.server.port, [][]byte{bpdu})
		}
	}
}

// TestSwitchFiftyClients: 50 clients exchange frames pairwise through the
// server; on a lossless network none is lost and none misdelivered. (The
// 50 announcements at once would exceed the default flood budget, whose
// test is TestFloodBudget.)
func TestSwitchFiftyClients(t *testing.T) {
	const n = 50
	h := startHub(t, n, func(c *Config) { c.FloodBudget = -1 })
	for i := range h.clients {
		h.announce(t, i)
	}
	for j, c := range h.clients { // everyone hears everyone's announcement
		for k := 0; k < n-1; k++ {
			select {
			case <-c.port.Frames():
			case <-time.After(10 * time.Second):
				t.Fatalf("client %d heard %d of %d announcements", j, k, n-1)
			}
		}
	}
	for i, c := range h.clients {
		for j := range h.clients {
			if i != j {
				if err := c.port.Inject(testFrame(mac(j), mac(i), uint32(i), 100)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for j, c := range h.clients {
		from := map[byte]bool{}
		for k := 0; k < n-1; k++ {
			select {
			case f := <-c.port.Frames():
				if f[5] != mac(j) {
					t.Fatalf("client %d got a frame for %x", j, f[5])
				}
				if from[f[11]] {
					t.Fatalf("client %d got two frames from %x", j, f[11])
				}
				from[f[11]] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("client %d got %d of %d frames", j, k, n-1)
			}
		}
		expectNoFrame(t, c.port, time.Millisecond)
	}
	expectNoFrame(t, h.server.port, 10*time.Millisecond)
}

// TestPortPerPeer: with PortPerPeer every client gets a port of its own,
// opened when it comes up and closed when it goes down.
func TestPortPerPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ports := make(chan *bridgeiftest.Port, 4)
		net := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		server := startSiteNoPort(t, Config{PrivateKey: skey, PSK: psk(10), Responder: true, AllowAny: true,
			PortPerPeer: func(name string) (bridgeif.Port, error) {
				p := bridgeiftest.NewPort(64)
				ports <- p
				return p, nil
			}}, net.Conn("server"))
		var clients []*site
		for i := 0; i < 2; i++ {
			cconn := net.Conn(fmt.Sprintf("c%d", i))
			clients = append(clients, startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(10), Peers: []PeerConfig{{
				PublicKey: skey.Public(),
				Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
			}}}, cconn))
			waitUp(t, clients[i], 1)
		}
		own := []*bridgeiftest.Port{<-ports, <-ports}
		synctest.Wait()
		// Frames of client 0 reach exactly one own port; an answer written
		// to that port reaches client 0 only.
		f := testFrame(0xff, mac(0), 1, 80)
		clients[0].port.Inject(f)
		time.Sleep(time.Second)
		var from0 *bridgeiftest.Port
		for _, p := range own {
			select {
			case g := <-p.Frames():
				if from0 != nil || string(g) != string(f) {
					t.Fatal("frame of client 0 misdelivered")
				}
				from0 = p
			default:
			}
		}
		if from0 == nil {
			t.Fatal("frame of client 0 reached no own port")
		}
		back := testFrame(mac(0), 0xee, 2, 80)
		from0.Inject(back)
		expectFrames(t, clients[0].port, [][]byte{back})
		expectNoFrame(t, clients[1].port, time.Second)
		// Client 0 goes away: its port is closed.
		clients[0].close(t)
		time.Sleep(3*DefaultKeepalive + 10*time.Second)
		if err := from0.Inject(back); err == nil {
			t.Fatal("the own port of a client that went down is still open")
		}
		server.close(t)
	})
}

// TestSwitchIsolateLocalWins: in isolate mode a client that claims the MAC
// of a host on the server's side (before that host spoke, as after a
// restart) loses it as soon as the host speaks: frames for it go to the
// server's port again, and the claim is counted against the client.
func TestSwitchIsolateLocalWins(t *testing.T) {
	h := startHub(t, 3, func(c *Config) { c.Isolate = true })
	h.announce(t, 0)
	// Client 2 claims 0xee, a MAC of the server's side.
	claim := testFrame(0xee, 0xee, 1, 80)
	copy(claim[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	h.clients[2].port.Inject(claim)
	expectFrames(t, h.server.port, [][]byte{claim})
	conflicts := dropCount(h.server, "mac conflict")
	// The host behind the server speaks: it takes its MAC back.
	local := testFrame(mac(0), 0xee, 2, 80)
	h.server.port.Inject(local)
	expectFrames(t, h.clients[0].port, [][]byte{local})
	waitDrops(t, h.server, "mac conflict", conflicts)
	// Client 0's frames for 0xee reach the server's side, not client 2.
	toLocal := testFrame(0xee, mac(0), 3, 80)
	h.clients[0].port.Inject(toLocal)
	expectFrames(t, h.server.port, [][]byte{toLocal})
	expectNoFrame(t, h.clients[2].port, 100*time.Millisecond)
}
