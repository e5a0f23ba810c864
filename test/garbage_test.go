//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// dialUDPIn opens a UDP socket inside namespace ns connected to addr.
func dialUDPIn(t *testing.T, ns, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	inNetns(t, ns, func() { c, err = net.Dial("udp", addr) })
	if err != nil {
		t.Fatalf("dial %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGarbageFlood: malformed, truncated and forged datagrams sent to a
// running server are dropped and counted; the cable keeps working and
// cab status --json shows the drops.
func TestGarbageFlood(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	srv, _ := pskPair(t, a, b, a.v4+":"+port)
	checkPing(t, a, b)

	c := dialUDPIn(t, b.ns, a.v4+":"+port)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 20000
	buf := make([]byte, 2000)
	for i := 0; i < n; i++ {
		size := rng.IntN(1500)
		for j := range buf[:size] {
			buf[j] = byte(rng.Uint32())
		}
		if size > 0 {
			buf[0] = []byte{1, 2, 4, byte(rng.Uint32())}[i%4] // look like cab packets
		}
		c.Write(buf[:size])
	}
	checkPing(t, a, b)

	out := mustRun(t, "ip", "netns", "exec", a.ns, cabBin, "status", "--json", "--name", a.ns)
	var st struct {
		Peers []struct {
			Name     string            `json:"name"`
			Up       bool              `json:"up"`
			RxFrames uint64            `json:"rx_frames"`
			Drops    map[string]uint64 `json:"drops"`
		} `json:"peers"`
		Drops map[string]uint64 `json:"drops"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json is not JSON: %v\n%s", err, out)
	}
	var dropped uint64
	for _, v := range st.Drops {
		dropped += v
	}
	for _, p := range st.Peers {
		for _, v := range p.Drops {
			dropped += v
		}
	}
	if dropped < n/2 {
		t.Errorf("status counts %d drops after %d garbage datagrams: %s", dropped, n, out)
	}
	if len(st.Peers) != 1 || !st.Peers[0].Up || st.Peers[0].RxFrames == 0 {
		t.Errorf("status after the flood: %s", out)
	}
	if srv.exited() {
		t.Fatalf("server died: %s", srv.output())
	}
	t.Logf("%d garbage datagrams, %d counted as dropped: %s", n, dropped, fmt.Sprint(st.Drops))
}
