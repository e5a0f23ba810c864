package cab

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
	"cab/crypto"
	"cab/transport"
)

// TestOpenPortTrunk: two vlan= ports of one TAP in one process open the
// TAP once, with its offloads unless offload=off; a VLAN open twice and a
// port that asks for the TAP with other options are refused, naming the
// fix; the last port's Close closes the TAP, and a later port opens it
// again.
func TestOpenPortTrunk(t *testing.T) {
	var opened []bridgeif.TAPSpec
	var taps []*bridgeiftest.Port
	saved := openTrunkTAP
	openTrunkTAP = func(spec string, ts bridgeif.TAPSpec, id crypto.PublicKey) (bridgeif.Port, error) {
		opened = append(opened, ts)
		p := bridgeiftest.NewPort(16)
		taps = append(taps, p)
		return p, nil
	}
	defer func() { openTrunkTAP = saved }()
	var id crypto.PublicKey
	p100, err := OpenPort("tap:cabtrunk0,ovs=brx,vlan=100", id)
	if err != nil {
		t.Fatal(err)
	}
	p200, err := OpenPort("tap:cabtrunk0,ovs=brx,vlan=200", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(opened) != 1 || opened[0].Name != "cabtrunk0" || opened[0].OVS != "brx" || opened[0].VLAN != 0 || opened[0].NoOffload {
		t.Fatalf("the TAP was opened %d times, as %+v: want once, as the trunk with offloads", len(opened), opened)
	}
	for spec, want := range map[string]string{
		"tap:cabtrunk0,ovs=brx,vlan=100":             "vlan=100 is open twice on this trunk",
		"tap:cabtrunk0,ovs=bry,vlan=300":             "give every vlan= port of a TAP the same",
		"tap:cabtrunk0,ovs=brx,offload=off,vlan=300": "offload=on",
		"tap:cabtrunk0,ovs=brx,vlan=0":               "vlan=0: use a VLAN id from 1 to 4094",
		"tap:cabtrunk0,ovs=brx,vlan=4095":            "vlan=4095: use a VLAN id from 1 to 4094",
		"tap:cabtrunk0,ovs=brx,vlan=blue":            "vlan=blue: use a VLAN id from 1 to 4094",
	} {
		if _, err := OpenPort(spec, id); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), spec) {
			t.Errorf("%s: %v, want an error naming the spec and %q", spec, err, want)
		}
	}
	if len(opened) != 1 {
		t.Fatalf("a refused port opened the TAP again")
	}
	// Each port is its VLAN of the one TAP.
	buf := append(make([]byte, 16), make([]byte, 60)...)
	copy(buf[16:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 0})
	if _, err := p200.WriteBatch([][]byte{buf}, 16); err != nil {
		t.Fatal(err)
	}
	if f := <-taps[0].Frames(); f[12] != 0x81 || f[13] != 0 || f[15] != 200 {
		t.Fatalf("VLAN 200 wrote % x", f[:16])
	}
	p100.Close()
	if errors.Is(taps[0].Inject(buf[16:]), net.ErrClosed) {
		t.Fatal("the TAP closed while VLAN 200 was open")
	}
	p200.Close()
	if !errors.Is(taps[0].Inject(buf[16:]), net.ErrClosed) {
		t.Fatal("the TAP is open after its last VLAN port closed")
	}
	p, err := OpenPort("tap:cabtrunk0,offload=off,vlan=100", id)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(opened) != 2 || !opened[1].NoOffload || opened[1].OVS != "" {
		t.Fatalf("after the last port closed, a new one opened the TAP as %+v", opened[1:])
	}
}

// TestOpenPortVLANElsewhere: vlan= on a vde: or stdio port is refused in
// one line that names the option and what to do instead.
func TestOpenPortVLANElsewhere(t *testing.T) {
	var id crypto.PublicKey
	for spec, want := range map[string]string{
		"vde:/run/vde/sw,vlan=100": "port/setvlan PORT VLAN",
		"stdio,vlan=100":           "vlan= is an option of tap: ports",
	} {
		p, err := OpenPort(spec, id)
		if err == nil {
			p.Close()
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), spec) {
			t.Errorf("%s: %v, want an error naming the spec and %q", spec, err, want)
		}
	}
}

// TestCableVLANTrunk: a client cable whose port is VLAN 100 of a trunk
// (a fake TAP): a frame the trunk reads tagged 100 reaches the server's
// port untagged, and the server's frames leave the trunk tagged 100;
// untagged frames and VLAN 200's are dropped, counted in the client's
// status as vlan_foreign, and never reach the server.
func TestCableVLANTrunk(t *testing.T) {
	sconn, cconn, saddr := pairConns(t, false)
	skey, ckey := mustKey(t), mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(1), Responder: true, AllowAny: true}, sconn)
	tap := bridgeiftest.NewPort(64)
	tr := bridgeif.NewTrunk(tap, nil)
	v100, err := tr.VLAN(100)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{PrivateKey: ckey, PSK: psk(1), Logger: quiet, Peers: []PeerConfig{{
		Name: "server", PublicKey: skey.Public(),
		Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return saddr, nil }},
	}}}, v100, []transport.Conn{cconn})
	if err != nil {
		t.Fatal(err)
	}
	client := &site{cable: c, stop: func() {}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	client.stop = cancel
	go func() { client.done <- c.Run(ctx) }()
	t.Cleanup(func() { client.close(t) })
	waitUp(t, client, 1)

	tag := func(f []byte, vid uint16) []byte {
		out := append(append([]byte(nil), f[:12]...), 0x81, 0, byte(vid>>8), byte(vid))
		return append(out, f[12:]...)
	}
	f := testFrame(0xaa, 0xbb, 1, 200)
	if err := tap.Inject(tag(f, 100)); err != nil {
		t.Fatal(err)
	}
	expectFrames(t, server.port, [][]byte{f})
	back := testFrame(0xbb, 0xaa, 2, 300)
	if err := server.port.Inject(back); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-tap.Frames():
		if string(got) != string(tag(back, 100)) {
			t.Fatalf("the trunk got % x, want the server's frame tagged 100", got[:20])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server's frame did not reach the trunk")
	}
	before := dropCount(client, "vlan_foreign")
	tap.Inject(testFrame(0xaa, 0xbb, 3, 200))
	tap.Inject(tag(testFrame(0xaa, 0xbb, 4, 200), 200))
	deadline := time.Now().Add(5 * time.Second)
	for dropCount(client, "vlan_foreign") < before+2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := dropCount(client, "vlan_foreign") - before; n != 2 {
		t.Fatalf("%d frames counted as vlan_foreign, want the untagged one and VLAN 200's", n)
	}
	// A frame of VLAN 100 after them still gets through, and is the only
	// one: the foreign ones never reached the server.
	g := testFrame(0xaa, 0xbb, 5, 100)
	tap.Inject(tag(g, 100))
	expectFrames(t, server.port, [][]byte{g})
}
