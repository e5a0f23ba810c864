package cab

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"cab/transport"
	"cab/transport/quic"
)

// TestCableOverQUIC: two cables over loopback QUIC. Frames bigger than
// the connection's datagram limit (a full-size Ethernet frame never fits
// one) cross intact in cab's fragments; the wire MTU is the datagram
// limit quic-go reports, and status shows quic with its RTT.
func TestCableOverQUIC(t *testing.T) {
	sconn, err := quic.Listen("127.0.0.1:0", quic.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cconn, err := quic.Dial(sconn.Addr().String(), quic.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	skey := mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(21), Responder: true, AllowAny: true}, sconn)
	remote := cconn.Remote()
	client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(21), Peers: []PeerConfig{{
		PublicKey: skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return remote, nil }},
	}}}, cconn)
	waitUp(t, client, 1)
	waitUp(t, server, 1)

	// quic-go's path MTU discovery only raises the limit, and the cable
	// reads it again every few seconds: the wire MTU is at most the limit.
	st := client.cable.Status().Peers[0]
	limit := st.WireMTU
	if now := cconn.PathMTU(remote); limit > now || limit < 1200 {
		t.Fatalf("client wire MTU %d, datagram limit %d; want at least 1200, at most the limit", limit, now)
	}
	if st.Transport != "quic" || st.RTT <= 0 {
		t.Errorf("client status: transport %q, rtt %v; want quic with an RTT", st.Transport, st.RTT)
	}
	sizes := []int{60, limit - 100, limit, 1514, 1518, 4000, 9216}
	var want [][]byte
	for i, size := range sizes {
		f := testFrame(0xaa, 0xbb, uint32(i), size)
		want = append(want, f)
		client.port.Inject(f)
		time.Sleep(5 * time.Millisecond)
	}
	got := map[int]bool{}
	for range want {
		select {
		case f := <-server.port.Frames():
			i := int(binary.BigEndian.Uint32(f[14:]))
			if i >= len(want) || !bytes.Equal(f, want[i]) {
				t.Fatalf("a frame of %d bytes arrived different", len(f))
			}
			got[i] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("frames %v of sizes %v arrived; the rest did not", got, sizes)
		}
	}
	st = client.cable.Status().Peers[0]
	if st.Fragmented < 4 {
		t.Errorf("%d frames sent in fragments, want at least 4 (those over %d bytes)", st.Fragmented, limit)
	}
	if s := cconn.Stats(); s.TooLarge != 0 {
		t.Errorf("client conn: %+v, want no packet over the datagram limit", s)
	}
	// quic-go's path MTU discovery grows the datagram limit; the cable
	// follows it within a second or two.
	grown := waitFor(5*time.Second, func() bool {
		client.port.Inject(testFrame(0xaa, 0xbb, 99, 1000))
		time.Sleep(20 * time.Millisecond)
		return cconn.PathMTU(remote) > quic.DefaultPathMTU
	})
	if !grown {
		t.Fatalf("the datagram limit stays at %d", cconn.PathMTU(remote))
	}
	if !waitFor(2500*time.Millisecond, func() bool { return client.cable.Status().Peers[0].WireMTU == cconn.PathMTU(remote) }) {
		t.Errorf("the client's wire MTU stays at %d, the datagram limit is %d", client.cable.Status().Peers[0].WireMTU, cconn.PathMTU(remote))
	}
	for len(server.port.Frames()) > 0 {
		<-server.port.Frames()
	}
	// The other way, a full-size frame.
	f := testFrame(0xbb, 0xaa, 0, 1514)
	server.port.Inject(f)
	expectFrames(t, client.port, [][]byte{f})
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
