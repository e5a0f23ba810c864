//go:build linux

package cabtest

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// soakSample is one reading of the hub during the soak.
type soakSample struct {
	at                     time.Duration
	goroutines, fds, peers int
	rssMiB                 float64
	clientRSSKiB           int // a steady client's, from /proc
	clientFDs              int
}

// TestSoak: a hub of CAB_SOAK_CLIENTS clients (50) for CAB_SOAK (60s;
// `make soak` runs it for an hour) with mixed traffic: every steady client
// pings the server and another client once a second, one client sends a
// TCP stream to the server (iperf3, 20 Mbit/s), another broadcasts five
// pings a second into the segment, and the last client's cab is stopped
// and started again every 10 s (a peer leaving and coming back, with a new
// session each time). Every CAB_SOAK_EVERY (5s) the test reads the
// server's goroutines, open files and RSS from its metrics, and a steady
// client's RSS and open files from /proc. After the warm-up (a sixth of
// the run, at least 15 s) they stay flat: no leak per packet, per
// handshake or per peer that comes and goes. The steady clients lose
// under 1 % of their pings and none of them is ever declared down.
func TestSoak(t *testing.T) {
	n := envInt("CAB_SOAK_CLIENTS", 50)
	dur, every := 60*time.Second, 5*time.Second
	if d, err := time.ParseDuration(os.Getenv("CAB_SOAK")); err == nil && d >= 30*time.Second {
		dur = d
	}
	if d, err := time.ParseDuration(os.Getenv("CAB_SOAK_EVERY")); err == nil && d >= time.Second {
		every = d
	}
	warmup := max(15*time.Second, dur/6)
	const metrics = "127.0.0.1:9668"
	srv, clients := hubSites(t, n)
	sp, cps := startHub(t, srv, clients, "--metrics", metrics)
	for _, c := range clients {
		waitPing(t, 10*time.Second, c.ns, overlayA)
	}
	steady := clients[:n-1]
	churn, churnArgs := clients[n-1], []string{"client", "-s", "tap:" + tapDev, "--key", clients[n-1].path("client.key"),
		"--server-key", pubkey(t, srv.path("server.key")), "--keepalive", "2s", srv.v4 + ":" + port}
	logFrom := len(sp.stderr.String())

	// Each pinger sends a ping a second for 95 % of the run, so that it is
	// done by the end however late a loaded machine wakes it.
	secs, count := fmt.Sprint(int(dur.Seconds())), int(dur.Seconds())*19/20
	var pingers []*proc
	for i, c := range steady {
		next := fmt.Sprintf("192.0.2.%d", (i+1)%len(steady)+2)
		pingers = append(pingers,
			start(t, c.ns, "ping", "-n", "-q", "-i", "1", "-W", "5", "-c", fmt.Sprint(count), overlayA),
			start(t, c.ns, "ping", "-n", "-q", "-i", "1", "-W", "5", "-c", fmt.Sprint(count), next))
	}
	iperfSrv := start(t, srv.ns, "iperf3", "-s", "-1", "-B", overlayA)
	time.Sleep(500 * time.Millisecond)
	iperf := start(t, steady[0].ns, "iperf3", "-c", overlayA, "-t", secs, "-b", "20M", "-i", "0")
	start(t, steady[1].ns, "ping", "-n", "-q", "-b", "-i", "0.2", "-c", fmt.Sprint(5*int(dur.Seconds())), "192.0.2.255")

	client := cps[0]
	var samples []soakSample
	began := time.Now()
	nextChurn, nextSample := began.Add(10*time.Second), began.Add(every)
	churnProc, restarts := cps[n-1], 0
	for time.Since(began) < dur {
		time.Sleep(200 * time.Millisecond)
		if time.Now().After(nextChurn) {
			nextChurn = nextChurn.Add(10 * time.Second)
			churnProc.signal(syscall.SIGTERM)
			if !churnProc.wait(10 * time.Second) {
				t.Fatalf("%s did not stop within 10 s of SIGTERM", churnProc.name)
			}
			churnProc = churn.cab(t, churnArgs...)
			setupTap(t, churn, churnProc, fmt.Sprintf("192.0.2.%d", n+1))
			restarts++
		}
		if time.Now().After(nextSample) {
			nextSample = nextSample.Add(every)
			m := scrape(t, srv.ns, metrics)
			s := soakSample{at: time.Since(began).Round(time.Second), goroutines: int(m["go_goroutines"]),
				fds: int(m["process_open_fds"]), rssMiB: m["process_resident_memory_bytes"] / (1 << 20)}
			for k, v := range m {
				if strings.HasPrefix(k, "cab_peer_up{") {
					s.peers += int(v)
				}
			}
			s.clientRSSKiB, _ = procMem(t, client.cmd.Process.Pid)
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", client.cmd.Process.Pid)); err == nil {
				s.clientFDs = len(ents)
			}
			samples = append(samples, s)
			t.Logf("soak %6v: server goroutines %d, open files %d, RSS %.1f MiB, peers up %d; client c1 RSS %.1f MiB, open files %d",
				s.at, s.goroutines, s.fds, s.rssMiB, s.peers, float64(s.clientRSSKiB)/1024, s.clientFDs)
		}
	}

	// Frames lost: the steady clients' pings.
	sent, got := 0, 0
	for _, p := range pingers {
		if !p.wait(30*time.Second + dur/10) {
			t.Fatalf("%s did not finish within %v of the end", p.name, 30*time.Second+dur/10)
		}
		s, g := pingSummary(p.stdout.String())
		sent += s
		got += g
	}
	loss := 100 * float64(sent-got) / float64(max(sent, 1))
	t.Logf("soak of %v, %d clients, the last restarted %d times: the steady clients' pings %d of %d answered (%.3f %% lost)", dur, n, restarts, got, sent, loss)
	if sent != len(pingers)*count {
		t.Errorf("%d pings sent, want %d", sent, len(pingers)*count)
	}
	if loss >= 1 {
		t.Errorf("the steady clients lost %.3f %% of their pings, want under 1 %%", loss)
	}
	if !iperf.wait(30*time.Second) || iperf.exitCode() != 0 {
		t.Errorf("iperf3 through the hub: %s\n%s", iperf.state(), iperf.output())
	}
	iperfSrv.wait(5 * time.Second)
	churnName := fmt.Sprintf("peer=c%d", n)
	for _, l := range strings.Split(sp.stderr.String()[logFrom:], "\n") {
		if strings.Contains(l, `msg="peer down"`) && !strings.Contains(l, churnName+" ") {
			t.Errorf("a steady client went down during the soak: %s", l)
		}
	}

	// Flat after the warm-up: what the hub holds does not grow with time.
	var base *soakSample
	for i := range samples {
		if samples[i].at >= warmup {
			base = &samples[i]
			break
		}
	}
	if base == nil || len(samples) < 3 {
		t.Fatalf("%d samples, none after the warm-up of %v", len(samples), warmup)
	}
	for _, s := range samples {
		if s.at <= base.at {
			continue
		}
		if lim := base.goroutines + base.goroutines/20 + 4; s.goroutines > lim {
			t.Errorf("at %v the server had %d goroutines, %d after the warm-up (limit %d): a leak", s.at, s.goroutines, base.goroutines, lim)
		}
		if lim := base.fds + 3; s.fds > lim {
			t.Errorf("at %v the server had %d open files, %d after the warm-up (limit %d): a leak", s.at, s.fds, base.fds, lim)
		}
		if lim := base.rssMiB*1.3 + 8; s.rssMiB > lim {
			t.Errorf("at %v the server's RSS was %.1f MiB, %.1f after the warm-up (limit %.1f): a leak", s.at, s.rssMiB, base.rssMiB, lim)
		}
		if lim := base.clientRSSKiB*13/10 + 8<<10; s.clientRSSKiB > lim {
			t.Errorf("at %v client c1's RSS was %d KiB, %d after the warm-up (limit %d): a leak", s.at, s.clientRSSKiB, base.clientRSSKiB, lim)
		}
		if lim := base.clientFDs + 3; s.clientFDs > lim {
			t.Errorf("at %v client c1 had %d open files, %d after the warm-up (limit %d): a leak", s.at, s.clientFDs, base.clientFDs, lim)
		}
		if s.peers < n-1 {
			t.Errorf("at %v the server had %d peers up, want at least the %d steady clients", s.at, s.peers, n-1)
		}
	}
}
