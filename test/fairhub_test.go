//go:build linux

package cabtest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFairHub: a hub of 20 clients, one of whose hosts floods broadcasts
// into its TAP far faster than the flood limit (50 000 frames a second for
// 15 s). Every other client keeps pinging the server and another client,
// 5 pings a second each: under 1 % is lost and no peer goes down. The
// flooder's own cab drops most of the storm before sealing it, the server
// drops what exceeds its flood budget, and both count it (cab status and
// metrics, by client and reason). After the flood, the flooder's traffic
// is back to normal within a second: no backlog is replayed.
func TestFairHub(t *testing.T) {
	const n = 20
	srv, clients := hubSites(t, n)
	const metrics = "127.0.0.1:9668"
	sp, cps := startHub(t, srv, clients, "--metrics", metrics)
	for _, c := range clients {
		waitPing(t, 10*time.Second, c.ns, overlayA)
	}
	flooder := clients[0]
	logFrom := make([]int, 0, n+1) // where each cab's log stood when the flood began
	procs := append([]*proc{sp}, cps...)

	// The others ping the server and the next client for 20 s, the flood
	// running in the middle 15 s.
	const pings = 100
	var pingers []*proc
	for i := 1; i < n; i++ {
		next := i%(n-1) + 1 // another client, never the flooder
		pingers = append(pingers,
			start(t, clients[i].ns, "ping", "-n", "-q", "-i", "0.2", "-W", "1", "-c", fmt.Sprint(pings), overlayA),
			start(t, clients[i].ns, "ping", "-n", "-q", "-i", "0.2", "-W", "1", "-c", fmt.Sprint(pings), fmt.Sprintf("192.0.2.%d", next+2)))
	}
	time.Sleep(2 * time.Second)
	for _, p := range procs {
		logFrom = append(logFrom, len(p.stderr.String()))
	}

	// The flood: broadcast frames of a local experimental EtherType (no
	// host answers them) written to the flooder's TAP through an
	// AF_PACKET socket.
	var fd int
	var err error
	var ifi *net.Interface
	inNetns(t, flooder.ns, func() {
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return
		}
		ifi, err = net.InterfaceByName(tapDev)
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on %s in %s: %v", tapDev, flooder.ns, err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_ALL)}
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:], ifi.HardwareAddr)
	frame[12], frame[13] = 0x88, 0xb5
	const rate, floodFor = 50000, 15 * time.Second
	began := time.Now()
	sent := 0
	for time.Since(began) < floodFor {
		for range rate / 100 {
			if unix.Sendto(fd, frame, 0, to) == nil {
				sent++
			}
		}
		if ahead := time.Duration(sent)*time.Second/rate - time.Since(began); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	stopped := time.Now()
	t.Logf("flooded %d broadcast frames in %v (%.0f/s)", sent, stopped.Sub(began).Round(time.Millisecond), float64(sent)/stopped.Sub(began).Seconds())
	if float64(sent) < 0.5*rate*floodFor.Seconds() {
		t.Fatalf("only %d frames sent in %v", sent, floodFor)
	}

	// After the flood: within a second the server stops hearing the
	// flooder's frames (nothing queued was replayed), and the flooder's
	// pings are answered at once.
	time.Sleep(time.Second)
	c1 := statusJSON(t, srv).peer("c1")
	time.Sleep(time.Second)
	c1b := statusJSON(t, srv).peer("c1")
	if c1 == nil || c1b == nil {
		t.Fatal("the server has no peer c1")
	}
	if d := c1b.RxFrames - c1.RxFrames; d > 20 {
		t.Errorf("the server still received %d frames from the flooder in the second after the one after the flood: a backlog replayed", d)
	}
	if got := ping(t, flooder.ns, overlayA, 5, "-i", "0.1"); got != 5 {
		t.Errorf("the flooder's pings right after its flood: %d of 5 answered", got)
	}

	// The others' pings.
	sentAll, gotAll := 0, 0
	for _, p := range pingers {
		if !p.wait(30 * time.Second) {
			t.Fatalf("%s did not finish", p.name)
		}
		s, g := pingSummary(p.stdout.String())
		sentAll += s
		gotAll += g
		if s != pings || g < pings-5 {
			t.Errorf("%s: %d of %d answered", p.name, g, s)
		}
	}
	loss := 100 * float64(sentAll-gotAll) / float64(max(sentAll, 1))
	t.Logf("the others' pings during the flood: %d of %d answered (%.2f %% lost)", gotAll, sentAll, loss)
	if loss >= 1 {
		t.Errorf("the others lost %.2f %% of their pings while one client flooded, want under 1 %%", loss)
	}
	for i, p := range procs {
		if log := p.stderr.String()[logFrom[i]:]; strings.Contains(log, `msg="peer down"`) {
			t.Errorf("%s: a peer went down during the flood:\n%s", p.name, grepLines(log, "peer down"))
		}
	}

	// The drops are counted where they happen, by client and reason.
	own := statusJSON(t, flooder)
	if own.Drops["flood limit"] < uint64(sent)/2 {
		t.Errorf("the flooder's cab counted %d flood-limit drops of %d frames, want most of them", own.Drops["flood limit"], sent)
	}
	st := statusJSON(t, srv)
	p1 := st.peer("c1")
	var others uint64
	for _, p := range st.Peers {
		if p.Name != "c1" {
			others += p.Drops["flood limit"] + p.Drops["flood budget"] + p.Drops["fair share"]
		}
	}
	t.Logf("the flooder's cab: drops %v; the server: c1's drops %v, the others' %d", own.Drops, p1.Drops, others)
	if p1.Drops["flood budget"]+p1.Drops["flood limit"]+p1.Drops["fair share"] == 0 {
		t.Errorf("the server counted no drop for the flooder: %v", p1.Drops)
	}
	m := scrape(t, srv.ns, metrics)
	for reason, v := range p1.Drops {
		key := fmt.Sprintf(`cab_peer_drops_total{peer="c1",reason=%q}`, reason)
		if got, ok := m[key]; !ok || got < float64(v) {
			t.Errorf("metrics: %s = %v, status said %d", key, got, v)
		}
	}
}
