package cab

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// segHub is a server with the default segment and two named ones, blue
// and red (red with a PSK of its own), and clients that ask for some of
// them.
type segHub struct {
	server  *site
	sports  map[string]*bridgeiftest.Port // the server's ports by segment
	clients []*site
	cports  []map[string]*bridgeiftest.Port // each client's ports by segment
	net     *transporttest.Network
	skey    crypto.PrivateKey
}

// segClient says what a client of a segHub has: the segments it asks for
// (with "!" after a name: without the segment's PSK), and whether it has a
// default port.
type segClient struct {
	segments []string
	noPort   bool
}

var redPSK = psk(9)

func startSegHub(t *testing.T, server func(*Config), clients ...segClient) *segHub {
	t.Helper()
	return startSegHubWrap(t, nil, server, clients...)
}

// startSegHubWrap is startSegHub with the server's conn wrapped by wrap.
func startSegHubWrap(t *testing.T, wrap func(transport.Conn) transport.Conn, server func(*Config), clients ...segClient) *segHub {
	t.Helper()
	h := &segHub{net: transporttest.NewNetwork(transporttest.Options{Queue: 8192}), skey: mustKey(t), sports: map[string]*bridgeiftest.Port{}}
	scfg := Config{PrivateKey: h.skey, PSK: psk(6), Responder: true, AllowAny: true}
	for _, name := range []string{"blue", "red"} {
		h.sports[name] = bridgeiftest.NewPort(4096)
		sc := SegmentConfig{Name: name, Spec: "fake:" + name, Port: h.sports[name]}
		if name == "red" {
			sc.PSK = redPSK
		}
		scfg.Segments = append(scfg.Segments, sc)
	}
	if server != nil {
		server(&scfg)
	}
	var sconn transport.Conn = h.net.Conn("server")
	if wrap != nil {
		sconn = wrap(sconn)
	}
	h.server = startSite(t, scfg, sconn)
	h.sports["default"] = h.server.port
	for i, sc := range clients {
		h.addClient(t, i, sc)
	}
	for _, c := range h.clients {
		waitUp(t, c, 1)
	}
	waitUp(t, h.server, len(clients))
	return h
}

func (h *segHub) addClient(t *testing.T, i int, sc segClient) {
	cconn := h.net.Conn(fmt.Sprintf("c%d", i))
	ccfg := Config{PrivateKey: mustKey(t), PSK: psk(6), Peers: []PeerConfig{{
		PublicKey: h.skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
	}}}
	ports := map[string]*bridgeiftest.Port{}
	for _, name := range sc.segments {
		name, nopsk := cutBang(name)
		ports[name] = bridgeiftest.NewPort(4096)
		seg := SegmentConfig{Name: name, Port: ports[name]}
		if name == "red" && !nopsk {
			seg.PSK = redPSK
		}
		ccfg.Segments = append(ccfg.Segments, seg)
	}
	port := bridgeiftest.NewPort(4096)
	if sc.noPort {
		port = nil
	} else {
		ports["default"] = port
	}
	h.clients = append(h.clients, startSiteWith(t, ccfg, cconn, port))
	h.cports = append(h.cports, ports)
}

func cutBang(s string) (string, bool) {
	if len(s) > 0 && s[len(s)-1] == '!' {
		return s[:len(s)-1], true
	}
	return s, false
}

// waitJoined waits until the server has client i in the segments want
// (names, "default" first when in it), and the client knows it.
func (h *segHub) waitJoined(t *testing.T, i int, want ...string) {
	t.Helper()
	key := h.clients[i].cable.cfg.PrivateKey.Public().String()
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		for _, p := range h.server.cable.Status().Peers {
			if p.PublicKey == key {
				got = p.Segments
			}
		}
		// The client knows it too: its server's segments are the same.
		mine := h.clients[i].cable.Status().Peers[0].Segments
		if slices.Equal(got, want) && (len(h.clients[i].cable.segments()) == 0 || slices.Equal(mine, want)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("client %d is in segments %v, want %v", i, got, want)
}

// broadcast injects a broadcast frame from src into port and returns it.
func broadcast(port *bridgeiftest.Port, src byte, seq uint32) []byte {
	b := testFrame(0xff, src, seq, 100)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	port.Inject(b)
	return b
}

// TestSegmentsIsolate: frames stay in their segment, on the server's ports
// and between clients, and the same MAC lives in two segments at once.
func TestSegmentsIsolate(t *testing.T) {
	h := startSegHub(t, nil,
		segClient{segments: []string{"blue"}},               // 0
		segClient{segments: []string{"blue"}, noPort: true}, // 1
		segClient{segments: []string{"red"}, noPort: true},  // 2
		segClient{segments: []string{"blue", "red"}},        // 3: both
		segClient{}, // 4: default only, as today
		segClient{segments: []string{"red!"}, noPort: true},  // 5: without red's PSK
		segClient{segments: []string{"green"}, noPort: true}, // 6: no such segment
	)
	h.waitJoined(t, 0, "default", "blue")
	h.waitJoined(t, 1, "blue")
	h.waitJoined(t, 2, "red")
	h.waitJoined(t, 3, "default", "blue", "red")
	h.waitJoined(t, 4, "default")
	h.waitJoined(t, 5)
	h.waitJoined(t, 6)

	// A broadcast in blue from client 1 reaches blue's ports only.
	b := broadcast(h.cports[1]["blue"], 0x21, 1)
	for _, p := range []*bridgeiftest.Port{h.sports["blue"], h.cports[0]["blue"], h.cports[3]["blue"]} {
		expectFrames(t, p, [][]byte{b})
	}
	// The same MAC (0x21) in red, from client 2: red's ports only, and
	// blue's table still has it behind client 1.
	r := broadcast(h.cports[2]["red"], 0x21, 2)
	for _, p := range []*bridgeiftest.Port{h.sports["red"], h.cports[3]["red"]} {
		expectFrames(t, p, [][]byte{r})
	}
	// Unicast to 0x21 from the server's blue side goes to client 1
	// alone; from the red side to client 2 alone.
	ub := testFrame(0x21, 0x31, 3, 80)
	h.sports["blue"].Inject(ub)
	ur := testFrame(0x21, 0x31, 4, 80)
	h.sports["red"].Inject(ur)
	expectFrames(t, h.cports[2]["red"], [][]byte{ur})
	// Client 1 has no port in blue here: its blue frames arrive on its
	// blue port, which is ports[1]["blue"].
	expectFrames(t, h.cports[1]["blue"], [][]byte{ub})
	// The default segment is today's cable: client 4's broadcast reaches
	// the server's port and the default ports of clients 0 and 3.
	d := broadcast(h.cports[4]["default"], 0x24, 5)
	for _, p := range []*bridgeiftest.Port{h.sports["default"], h.cports[0]["default"], h.cports[3]["default"]} {
		expectFrames(t, p, [][]byte{d})
	}
	for name, p := range map[string]*bridgeiftest.Port{
		"server red": h.sports["red"], "server blue": h.sports["blue"], "c0 blue": h.cports[0]["blue"],
		"c3 blue": h.cports[3]["blue"], "c3 red": h.cports[3]["red"], "c4": h.cports[4]["default"],
		"c5 red": h.cports[5]["red"], "c6 green": h.cports[6]["green"], "server default": h.sports["default"],
		"c0 default": h.cports[0]["default"], "c3 default": h.cports[3]["default"],
	} {
		select {
		case f := <-p.Frames():
			t.Errorf("%s got a frame it should not: % x", name, f[:20])
		default:
		}
	}
	st := h.server.cable.Status()
	for _, ps := range st.Peers {
		switch ps.PublicKey {
		case h.clients[5].cable.cfg.PrivateKey.Public().String():
			if why := ps.Refused["red"]; why == "" {
				t.Errorf("client 5's refusal of red has no reason: %+v", ps)
			}
		case h.clients[6].cable.cfg.PrivateKey.Public().String():
			if why := ps.Refused["green"]; why != "no such segment on the server" {
				t.Errorf("client 6's refusal of green: %q", why)
			}
		}
	}
	if len(st.Segments) != 3 || st.Segments[0].Name != "default" || st.Segments[1].Name != "blue" || st.Segments[2].Name != "red" {
		t.Fatalf("status segments: %+v", st.Segments)
	}
	fdbSeg := map[string]string{}
	for _, e := range h.server.cable.FDB() {
		if e.MAC == "02:00:00:00:00:21" {
			fdbSeg[e.Segment] = e.Peer
		}
	}
	if len(fdbSeg) != 2 || fdbSeg["blue"] == fdbSeg["red"] {
		t.Fatalf("MAC :21 should be in blue and red behind two clients: %v", fdbSeg)
	}
	// The client learns the outcome too: client 5's status says why red
	// was refused.
	if why := h.clients[5].cable.Status().Peers[0].Refused["red"]; why == "" {
		t.Errorf("client 5 does not know why red was refused: %+v", h.clients[5].cable.Status().Peers[0])
	}
}

// TestSegmentForgedID: a client that writes the id of a segment it was
// not let into gets nothing into it; the server drops and counts the
// frame.
func TestSegmentForgedID(t *testing.T) {
	h := startSegHub(t, nil, segClient{segments: []string{"blue", "red!"}})
	h.waitJoined(t, 0, "default", "blue")
	c := h.clients[0].cable
	p := c.peerList()[0]
	before := dropCount(h.server, "not in segment")
	forged := &segment{id: crypto.SegmentID("red"), name: "red"}
	out := c.newOutBatch()
	var sc scratch
	f := testFrame(0xff, 0x41, 1, 100)
	buf := sc.get(len(f))
	copy(buf[crypto.HeaderLen:], f)
	c.seal(p, forged, buf, len(f), &out, &sc, time.Now().UnixNano())
	out.flush()
	waitDrops(t, h.server, "not in segment", before)
	expectNoFrame(t, h.sports["red"], 100*time.Millisecond)
	// The same frame into blue, which it joined, goes through.
	buf = sc.get(len(f))
	copy(buf[crypto.HeaderLen:], f)
	c.seal(p, h.clients[0].cable.segmentNamed("blue"), buf, len(f), &out, &sc, time.Now().UnixNano())
	out.flush()
	expectFrames(t, h.sports["blue"], [][]byte{f})
}

// TestSegmentFragments: a named segment's frame too big for the path
// crosses in fragments and arrives in its segment.
func TestSegmentFragments(t *testing.T) {
	h := startSegHub(t, nil, segClient{segments: []string{"blue"}, noPort: true})
	h.waitJoined(t, 0, "blue")
	p := h.clients[0].cable.peerList()[0]
	p.route.wireMTU.Store(600)
	f := testFrame(0xff, 0x51, 1, 1500)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	h.cports[0]["blue"].Inject(f)
	expectFrames(t, h.sports["blue"], [][]byte{f})
	if n := p.route.fragmented.Load(); n == 0 {
		t.Fatal("the frame was not fragmented")
	}
	expectNoFrame(t, h.sports["default"], 50*time.Millisecond)
}

// FuzzParseControl: no control message crashes the parser, and what it
// accepts names at most maxJoins well-formed segments.
func FuzzParseControl(f *testing.F) {
	f.Add([]byte(`{"join":{"default":true,"segments":[{"n":"blue","p":"AAAAAAAAAAAAAAAAAAAAAA=="}]}}`))
	f.Add([]byte(`{"reply":{"segments":[{"n":"red","ok":false,"why":"not-allowed"}]}}`))
	f.Add([]byte(`{"join":{},"reply":{}}`))
	f.Add([]byte(`{"join":{"segments":[{"n":"../x"}]}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseControl(b)
		if err != nil {
			return
		}
		if len(b) > maxControlLen {
			t.Fatalf("accepted %d bytes", len(b))
		}
		n := 0
		if m.Join != nil {
			n += len(m.Join.Segments)
		}
		if m.Reply != nil {
			n += len(m.Reply.Segments)
		}
		if n > maxJoins || m.Join != nil && m.Reply != nil {
			t.Fatalf("accepted %+v", m)
		}
	})
}

// TestParseControl: the parser takes the messages the cable sends and
// refuses the malformed.
func TestParseControl(t *testing.T) {
	for _, good := range []string{
		`{"join":{"default":false,"segments":[{"n":"blue"},{"n":"red","p":"AQID"}]}}`,
		`{"reply":{"segments":[{"n":"blue","ok":true},{"n":"red","why":"psk-wrong"}]}}`,
	} {
		if _, err := parseControl([]byte(good)); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	many := `{"join":{"segments":[` + strings.Repeat(`{"n":"a"},`, maxJoins) + `{"n":"a"}]}}`
	for _, bad := range []string{`{}`, `{"join":{},"reply":{}}`, `not json`, `{"join":{"segments":[{"n":""}]}}`,
		`{"reply":{"segments":[{"n":"default"}]}}`, many, `{"join":{"segments":[{"n":"` + strings.Repeat("x", 2000) + `"}]}}`,
		`{"reply":{"segments":[{"n":"red","why":"Not\nallowed"}]}}`} {
		if _, err := parseControl([]byte(bad)); err == nil {
			t.Errorf("%.60s: accepted", bad)
		}
	}
}

// TestSegmentsReload: a reload adds a segment (a peer that asked for it
// joins without asking again), removes one (its members leave it at once),
// and a change of what a key may join moves the peer, all without a new
// handshake for anyone.
func TestSegmentsReload(t *testing.T) {
	var mu sync.Mutex
	allowed := map[crypto.PublicKey][]string{}
	h := startSegHub(t, func(c *Config) {
		c.Allow = func(crypto.PublicKey) (string, bool) { return "", true }
		c.AllowedSegments = func(k crypto.PublicKey) []string {
			mu.Lock()
			defer mu.Unlock()
			return allowed[k]
		}
	})
	allow := func(i int, segs ...string) {
		mu.Lock()
		allowed[h.clients[i].cable.cfg.PrivateKey.Public()] = segs
		mu.Unlock()
	}
	h.addClient(t, 0, segClient{segments: []string{"blue", "green"}, noPort: true})
	h.addClient(t, 1, segClient{segments: []string{"blue"}, noPort: true})
	allow(0, "blue", "green")
	allow(1, "blue")
	waitUp(t, h.clients[0], 1)
	waitUp(t, h.clients[1], 1)
	h.waitJoined(t, 0, "blue")
	h.waitJoined(t, 1, "blue")

	green := bridgeiftest.NewPort(4096)
	segs := []SegmentConfig{
		{Name: "blue", Spec: "fake:blue"},
		{Name: "red", Spec: "fake:red", PSK: redPSK},
		{Name: "green", Spec: "fake:green"},
	}
	open := func(sc SegmentConfig) (bridgeif.Port, error) {
		if sc.Name != "green" {
			t.Errorf("reload opened %s again", sc.Name)
		}
		return green, nil
	}
	if added, removed, err := h.server.cable.SetSegments(segs, open); err != nil || added != 1 || removed != 0 {
		t.Fatalf("add green: %d added, %d removed, %v", added, removed, err)
	}
	h.waitJoined(t, 0, "blue", "green")
	g := broadcast(h.cports[0]["green"], 0x61, 1)
	expectFrames(t, green, [][]byte{g})

	// Remove blue: both clients leave it; client 1 is in nothing now.
	if _, removed, err := h.server.cable.SetSegments(segs[1:], open); err != nil || removed != 1 {
		t.Fatalf("remove blue: %d removed, %v", removed, err)
	}
	h.waitJoined(t, 0, "green")
	h.waitJoined(t, 1)
	if err := h.sports["blue"].Inject(testFrame(0xff, 0x62, 2, 80)); err == nil {
		t.Error("the removed segment's port is still open")
	}

	// The allow list moves client 0 out of green.
	allow(0, "blue")
	h.waitJoined(t, 0)
	if why := h.clients[0].cable.Status().Peers[0].Refused["green"]; why != "not allowed for this key" {
		t.Errorf("client 0 was told %q about green", why)
	}
	for i, c := range h.clients {
		if n := c.cable.Status().Peers[0].Handshakes; n != 1 {
			t.Errorf("client %d: %d handshakes, want 1: the reload touched its session", i, n)
		}
	}
}

// noControl is a server conn that loses every control packet, as a cab
// without segments would drop them.
type noControl struct{ transport.Conn }

func (c noControl) ReadBatch(ps []transport.Packet) (int, error) {
	for {
		n, err := c.Conn.ReadBatch(ps)
		kept := 0
		for i := 0; i < n; i++ {
			if len(ps[i].B) > 0 && ps[i].B[0] == crypto.TypeControl {
				continue
			}
			ps[kept].B, ps[kept].Addr = append(ps[kept].B[:0], ps[i].B...), ps[i].Addr
			kept++
		}
		if kept > 0 || err != nil {
			return kept, err
		}
	}
}

// TestSegmentsServerSilent: a client whose server never answers its joins
// (a cab without segments) says so once, after joinSilence, and keeps the
// default segment.
func TestSegmentsServerSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncLog
		blue := bridgeiftest.NewPort(64)
		h := startHubWith(t, 1, hubOpts{
			wrap: func(c transport.Conn) transport.Conn { return noControl{c} },
			client: func(c *Config) {
				c.Segments = []SegmentConfig{{Name: "blue", Port: blue}}
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			},
		})
		time.Sleep(joinSilence - 2*time.Second)
		if strings.Contains(logs.String(), "has not answered the segment joins") {
			t.Fatal("warned before joinSilence")
		}
		time.Sleep(4 * time.Second)
		if n := strings.Count(logs.String(), "has not answered the segment joins"); n != 1 {
			t.Fatalf("%d warnings after joinSilence, want 1:\n%s", n, logs.String())
		}
		h.announce(t, 0) // the default segment still crosses
	})
}

// TestSegmentPolicy: a segment's own policy: isolate keeps its peers
// apart while the default segment relays; allowed_vlans drops other
// VLANs; a [[peer]]'s segments list lets it in.
func TestSegmentPolicy(t *testing.T) {
	net := transporttest.NewNetwork(transporttest.Options{Queue: 8192})
	skey := mustKey(t)
	keys := []crypto.PrivateKey{mustKey(t), mustKey(t)}
	sblue := bridgeiftest.NewPort(4096)
	scfg := Config{PrivateKey: skey, Responder: true,
		Segments: []SegmentConfig{{Name: "blue", Port: sblue, Isolate: true, AllowedVLANs: []uint16{0}}},
		Peers:    []PeerConfig{{PublicKey: keys[0].Public(), Segments: []string{"blue"}}, {PublicKey: keys[1].Public(), Segments: []string{"blue"}}}}
	server := startSite(t, scfg, net.Conn("server"))
	var clients []*site
	var blues []*bridgeiftest.Port
	for i, k := range keys {
		conn := net.Conn(fmt.Sprintf("c%d", i))
		bp := bridgeiftest.NewPort(4096)
		blues = append(blues, bp)
		clients = append(clients, startSite(t, Config{PrivateKey: k, Segments: []SegmentConfig{{Name: "blue", Port: bp}}, Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: conn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, conn))
	}
	h := &segHub{server: server, clients: clients}
	for i := range clients {
		waitUp(t, clients[i], 1)
		h.waitJoined(t, i, "default", "blue")
	}
	// Isolated blue: client 0's broadcast reaches the server's blue port,
	// not client 1; in the default segment it reaches both.
	b := broadcast(blues[0], 0x71, 1)
	expectFrames(t, sblue, [][]byte{b})
	d := broadcast(clients[0].port, 0x71, 2)
	expectFrames(t, server.port, [][]byte{d})
	expectFrames(t, clients[1].port, [][]byte{d})
	expectNoFrame(t, blues[1], 100*time.Millisecond)
	// A tagged frame into blue, which allows untagged only, is dropped.
	before := dropCount(server, "not allowed")
	tagged := testFrame(0xff, 0x71, 3, 80)
	copy(tagged[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	tagged = append(tagged[:12], append([]byte{0x81, 0x00, 0x00, 0x64}, tagged[12:]...)...)
	blues[0].Inject(tagged)
	waitDrops(t, server, "not allowed", before)
	expectNoFrame(t, sblue, 50*time.Millisecond)
}

// recorder keeps a copy of every packet a conn reads.
type recorder struct {
	transport.Conn
	mu   sync.Mutex
	pkts [][]byte
}

func (r *recorder) ReadBatch(ps []transport.Packet) (int, error) {
	n, err := r.Conn.ReadBatch(ps)
	r.mu.Lock()
	for i := 0; i < n; i++ {
		r.pkts = append(r.pkts, append([]byte(nil), ps[i].B...))
	}
	r.mu.Unlock()
	return n, err
}

// TestSegmentHidden: on the underlay, a blue packet and a red packet of
// the same frame look alike: the same type, flags and length, and neither
// segment's id in the clear.
func TestSegmentHidden(t *testing.T) {
	var rec *recorder
	h := startSegHubWrap(t, func(c transport.Conn) transport.Conn { rec = &recorder{Conn: c}; return rec }, nil,
		segClient{segments: []string{"blue", "red"}, noPort: true})
	h.waitJoined(t, 0, "blue", "red")
	f := testFrame(0xff, 0x81, 1, 300)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	h.cports[0]["blue"].Inject(f)
	expectFrames(t, h.sports["blue"], [][]byte{f})
	h.cports[0]["red"].Inject(f)
	expectFrames(t, h.sports["red"], [][]byte{f})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var data [][]byte
	for _, p := range rec.pkts {
		if p[0] == crypto.TypeData && len(p) == crypto.Overhead+len(f)+segTrailer {
			data = append(data, p)
		}
	}
	if len(data) != 2 {
		t.Fatalf("%d data packets of the frame's size recorded, want 2", len(data))
	}
	if !bytes.Equal(data[0][:4], data[1][:4]) || data[0][1]&crypto.FlagSegment == 0 {
		t.Fatalf("headers differ, or carry no segment flag: % x and % x", data[0][:4], data[1][:4])
	}
	for _, name := range []string{"blue", "red"} {
		var id [4]byte
		binary.BigEndian.PutUint32(id[:], crypto.SegmentID(name))
		for _, p := range data {
			if bytes.Contains(p, id[:]) {
				t.Errorf("%s's id %x is in the clear", name, id)
			}
		}
	}
}

// TestSegmentLimits: a segment's max_macs and flood_rate bound its
// peers, and leave the default segment's alone.
func TestSegmentLimits(t *testing.T) {
	h := startSegHub(t, func(c *Config) { c.Segments[0].MaxMACs, c.Segments[0].FloodRate = 1, 5 },
		segClient{segments: []string{"blue"}})
	h.waitJoined(t, 0, "default", "blue")
	macs := dropCount(h.server, "mac limit")
	broadcast(h.cports[0]["blue"], 0x91, 1)
	broadcast(h.cports[0]["blue"], 0x92, 2)
	waitDrops(t, h.server, "mac limit", macs)
	floods := dropCount(h.server, "flood limit")
	for i := 0; i < 40; i++ {
		broadcast(h.cports[0]["blue"], 0x91, uint32(10+i))
	}
	waitDrops(t, h.server, "flood limit", floods)
	// The default segment has the cable's limits: 40 broadcasts from two
	// MACs all arrive.
	for len(h.sports["default"].Frames()) > 0 {
		<-h.sports["default"].Frames()
	}
	var want [][]byte
	for i := 0; i < 40; i++ {
		want = append(want, broadcast(h.cports[0]["default"], 0x91+byte(i%2), uint32(100+i)))
	}
	expectFrames(t, h.sports["default"], want)
}

// TestControlFits: a join request and a reply for maxJoins segments of the
// longest names, with proofs and the longest refusal, fit maxControlLen,
// which fits one packet on an IPv6 underlay of MTU 1280.
func TestControlFits(t *testing.T) {
	req := &joinRequest{Default: true}
	reply := &joinReply{}
	for i := range maxJoins {
		name := fmt.Sprintf("%02d", i) + strings.Repeat("x", 30)
		if err := CheckSegmentName(name); err != nil {
			t.Fatal(err)
		}
		req.Segments = append(req.Segments, joinItem{Name: name, Proof: make([]byte, crypto.ProofLen)})
		reply.Segments = append(reply.Segments, joinOutcome{Name: name, Why: whyPSKMissing})
	}
	for _, m := range []*control{{Join: req}, {Reply: reply}} {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxControlLen {
			t.Errorf("%d bytes, more than %d", len(b), maxControlLen)
		}
		if _, err := parseControl(b); err != nil {
			t.Errorf("%v", err)
		}
	}
	if maxControlLen+crypto.Overhead > 1280-40-8 {
		t.Errorf("a control packet of %d bytes does not fit an IPv6 underlay of MTU 1280", maxControlLen+crypto.Overhead)
	}
}
