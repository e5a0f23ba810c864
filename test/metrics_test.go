//go:build linux

package cabtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape fetches http://addr/metrics from inside namespace ns (a plain
// HTTP/1.0 GET on a socket made there) and returns the samples by name and
// labels, e.g. `cab_peer_up{peer="x",transport="udp"}`.
func scrape(t *testing.T, ns, addr string) map[string]float64 {
	t.Helper()
	var c net.Conn
	var err error
	inNetns(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	body, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	if !strings.HasPrefix(text, "HTTP/1.0 200") && !strings.HasPrefix(text, "HTTP/1.1 200") {
		t.Fatalf("metrics: %.200s", text)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text[strings.Index(text, "\r\n\r\n")+4:]))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// TestMetrics: --metrics serves the numbers cab status shows. Each counter
// scraped lies between two `cab status --json` taken before and after.
func TestMetrics(t *testing.T) {
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	const addr = "127.0.0.1:9667"
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--metrics", addr)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	checkPing(t, a, b)

	before := statusOf(t, a)
	m := scrape(t, a.ns, addr)
	after := statusOf(t, a)
	if len(before) != 1 || len(after) != 1 {
		t.Fatalf("status: %+v", after)
	}
	p0, p1 := before[0], after[0]
	label := fmt.Sprintf(`{peer=%q}`, p0.Name)
	if v := m[fmt.Sprintf(`cab_peer_up{peer=%q,transport="udp"}`, p0.Name)]; v != 1 {
		t.Errorf("cab_peer_up = %v, want 1 (metrics: %v)", v, m)
	}
	for name, r := range map[string][2]uint64{
		"cab_peer_rx_frames_total": {p0.RxFrames, p1.RxFrames},
		"cab_peer_tx_frames_total": {p0.TxFrames, p1.TxFrames},
	} {
		v, ok := m[name+label]
		if !ok || v < float64(r[0]) || v > float64(r[1]) || v == 0 {
			t.Errorf("%s = %v (present %v), want between %d and %d, not 0", name, v, ok, r[0], r[1])
		}
	}
	if v := m["cab_peer_macs"+label]; int(v) != p1.MACs || v == 0 {
		t.Errorf("cab_peer_macs = %v, status says %d", v, p1.MACs)
	}
	if v, ok := m["cab_fdb_entries"]; !ok || v < 2 {
		t.Errorf("cab_fdb_entries = %v (present %v), want ≥ 2", v, ok)
	}
	if _, ok := m["process_cpu_seconds_total"]; !ok {
		t.Error("no process metrics")
	}
}
