//go:build linux

package cabtest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cab"
	"cab/crypto"
	"cab/transport"
	"cab/transport/udp"
)

// How far one hub goes. TestHubScale runs the real cab server (one
// process, one UDP socket) in a namespace, and many clients as cables in
// this process, each on its own UDP socket in a namespace of their own, so
// that the server's CPU and memory are its own (read from /proc). By
// default it is a quick check with 50 clients; CAB_HUB_CLIENTS=200
// CAB_HUB_SECONDS=10 gives the README's figures (and 1000), and
// CAB_HUB_DEAD_AFTER=0 runs the clients without --dead-after (default 1s).

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// procCPU returns the user+system CPU time of process pid.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command (which may hold spaces) in parens.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// procMem returns the resident and peak resident memory of pid, in KiB.
func procMem(t *testing.T, pid int) (rss, hwm int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwm, _ = strconv.Atoi(f[1])
		}
	}
	return rss, hwm
}

// loadPort is a client's port: frames sent to it with send come out of
// ReadBatch; WriteBatch counts the load's frames the cable delivers.
type loadPort struct {
	in       chan []byte
	done     chan struct{}
	once     sync.Once
	received *atomic.Uint64 // unicast frames of the load
	bcast    *atomic.Uint64 // broadcast frames of the load
}

func (p *loadPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case f := <-p.in:
		sizes[0] = copy(bufs[0][offset:], f)
	case <-p.done:
		return 0, net.ErrClosed
	}
	n := 1
	for n < len(bufs) {
		select {
		case f := <-p.in:
			sizes[n] = copy(bufs[n][offset:], f)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// WriteBatch counts the unicast frames of the load (the hub's own port
// floods a little IPv6 of its own too).
func (p *loadPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		if f := b[offset:]; len(f) >= 14 && f[12] == 0x88 && f[13] == 0xb5 {
			if f[0]&1 == 0 {
				p.received.Add(1)
			} else {
				p.bcast.Add(1)
			}
		}
	}
	return len(bufs), nil
}

func (p *loadPort) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// send queues f without blocking; false when the queue is full.
func (p *loadPort) send(f []byte) bool {
	select {
	case p.in <- f:
		return true
	default:
		return false
	}
}

// loadMAC is MAC m of client i.
func loadMAC(i, m int) []byte { return []byte{0x02, 0xcc, byte(i >> 8), byte(i), 0, byte(m)} }

// loadFrame is a 64-byte frame from MAC src to dst.
func loadFrame(dst, src []byte, seq uint32) []byte {
	f := make([]byte, 64)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
	binary.BigEndian.PutUint32(f[14:], seq)
	return f
}

// hubStatus is the part of the server's `cab status --json` read here.
type hubStatus struct {
	Peers []struct {
		Up       bool   `json:"up"`
		RxFrames uint64 `json:"rx_frames"`
	} `json:"peers"`
	FDB int `json:"fdb_entries"`
}

func hubStatusOf(t *testing.T, s *site) hubStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st hubStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st
}

// TestHubScale: every client comes up, the hub learns all their MACs,
// frames between clients at a moderate rate all arrive, and the hub's
// CPU, memory and frames per second at saturation are logged.
func TestHubScale(t *testing.T) {
	t.Parallel()
	n, secs := envInt("CAB_HUB_CLIENTS", 50), envInt("CAB_HUB_SECONDS", 3)
	deadAfter := time.Second
	if d, err := time.ParseDuration(os.Getenv("CAB_HUB_DEAD_AFTER")); err == nil {
		deadAfter = d
	}
	const macs = 5 // per client
	phase := time.Duration(secs) * time.Second
	a, b := newPair(t)
	pskFile := genkey(t, a.path("hub.psk"))
	// The hub without --dead-after: here its clients share two cores with
	// it, and a client that floods of 1000 broadcasts keep busy for a
	// second answers the hub's asks late. The clients ask (DeadAfter 1s).
	// No flood budget: the test measures what copying costs the hub.
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", pskFile, "--flood-budget", "0")
	waitFor(10*time.Second, func() bool { return strings.Contains(srv.stderr.String(), "cable up") || srv.exited() })
	pid := srv.cmd.Process.Pid
	raw, err := crypto.LoadKeyFile(pskFile)
	if err != nil {
		t.Fatal(err)
	}
	psk := crypto.Secret(raw)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The clients come from many addresses, as from many hosts: the hub
	// limits handshakes per source host.
	const hosts = 252 // 198.51.100.3 to .254
	for h := range min(n, hosts) {
		mustRun(t, "ip", "-n", b.ns, "addr", "add", fmt.Sprintf("198.51.100.%d/24", 3+h), "dev", b.ulIf)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var received, broadcasts atomic.Uint64
	ports := make([]*loadPort, n)
	cables := make([]*cab.Cable, n)
	start := time.Now()
	for i := range n {
		var conn *udp.Conn
		inNetns(t, b.ns, func() { conn, err = udp.Listen(fmt.Sprintf("198.51.100.%d:0", 3+i%hosts)) })
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		d, err := cab.UDPDialer(conn, a.v4+":"+port)
		if err != nil {
			t.Fatal(err)
		}
		key, err := crypto.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = &loadPort{in: make(chan []byte, 256), done: make(chan struct{}), received: &received, bcast: &broadcasts}
		cables[i], err = cab.New(cab.Config{PrivateKey: key, PSK: &psk, Logger: quiet, CryptoWorkers: -1, DeadAfter: deadAfter,
			Peers: []cab.PeerConfig{{Name: "hub", PublicKey: crypto.PSKStatic(psk).Public(), Dial: d}}},
			ports[i], []transport.Conn{conn})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cables[i].Run(ctx)
		}()
	}
	allUp := func() bool {
		for _, c := range cables {
			if !c.Status().Peers[0].Up {
				return false
			}
		}
		return true
	}
	if !waitFor(60*time.Second, allUp) {
		t.Fatalf("not all %d clients up within 60 s", n)
	}
	upIn := time.Since(start)
	if !waitFor(10*time.Second, func() bool {
		up := 0
		for _, p := range hubStatusOf(t, a).Peers {
			if p.Up {
				up++
			}
		}
		return up == n
	}) {
		t.Fatalf("the hub does not show %d clients up", n)
	}

	// Idle: the clients ask after a third of their dead-after of silence.
	cpu0, t0 := procCPU(t, pid), time.Now()
	time.Sleep(phase)
	idleCPU := float64(procCPU(t, pid)-cpu0) / float64(time.Since(t0))

	// MACs: each client sends a frame from each of its MACs to the hub's
	// own TAP, whose MAC the hub knows (the TAP's IPv6 chatter): learned
	// without a flood.
	if !waitFor(10*time.Second, func() bool { return hubStatusOf(t, a).FDB >= 1 }) {
		t.Fatal("the hub has not learned its own TAP's MAC")
	}
	out := mustRun(t, "ip", "-n", a.ns, "-o", "link", "show", "dev", tapDev)
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no MAC for the hub's TAP: %s", out)
	}
	hubMAC, _ := net.ParseMAC(m[1])
	for i, p := range ports {
		for m := range macs {
			for !p.send(loadFrame(hubMAC, loadMAC(i, m), 0)) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	if !waitFor(30*time.Second, func() bool { return hubStatusOf(t, a).FDB >= n*macs }) {
		out, _ := run(5*time.Second, "ip", "netns", "exec", a.ns, cabBin, "status", "--name", a.ns)
		t.Fatalf("the hub learned %d MACs, want %d\n%s", hubStatusOf(t, a).FDB, n*macs, out)
	}
	macCount := hubStatusOf(t, a).FDB
	rss, _ := procMem(t, pid)

	// Broadcasts: each client sends one, spread over a second; the hub
	// copies each to every other client.
	b0, bc0 := broadcasts.Load(), procCPU(t, pid)
	for i, p := range ports {
		p.send(loadFrame([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, loadMAC(i, 0), 1))
		time.Sleep(time.Second / time.Duration(n))
	}
	wantBC := uint64(n * (n - 1))
	waitFor(20*time.Second, func() bool { return broadcasts.Load()-b0 >= wantBC })
	gotBC, bcCPU := broadcasts.Load()-b0, procCPU(t, pid)-bc0
	if n <= 50 && gotBC != wantBC {
		t.Errorf("%d broadcasts: %d copies arrived, want %d", n, gotBC, wantBC)
	}

	// The storm settles: the hub's CPU falls below half a core.
	for i := 0; i < 30; i++ {
		c0 := procCPU(t, pid)
		time.Sleep(time.Second)
		if procCPU(t, pid)-c0 < 500*time.Millisecond {
			break
		}
	}

	// A moderate rate, every frame counted: each client sends 20 frames
	// a second to the next client's first MAC.
	relay := func(perClient int, d time.Duration, paced bool) (sent, got uint64, cpu time.Duration) {
		r0, c0 := received.Load(), procCPU(t, pid)
		var s atomic.Uint64
		var gw sync.WaitGroup
		stop := time.Now().Add(d)
		for i, p := range ports {
			gw.Add(1)
			go func() {
				defer gw.Done()
				dst, src := loadMAC((i+1)%n, 0), loadMAC(i, 0)
				tick := time.Second / time.Duration(max(perClient, 1))
				for seq := uint32(0); time.Now().Before(stop); seq++ {
					if p.send(loadFrame(dst, src, seq)) {
						s.Add(1)
					}
					if paced {
						time.Sleep(tick)
					} else if seq%64 == 63 {
						time.Sleep(time.Millisecond) // let the others in
					}
				}
			}()
		}
		gw.Wait()
		time.Sleep(time.Second) // the last frames land
		return s.Load(), received.Load() - r0, procCPU(t, pid) - c0
	}
	sent, got, _ := relay(20, phase, true)
	if got < sent*99/100 || got > sent {
		t.Errorf("at 20 frames/s per client: %d of %d frames arrived, want 99 %%", got, sent)
	}
	// Saturation: as fast as the clients can send.
	satSent, satGot, satCPU := relay(0, phase, false)
	_, hwm := procMem(t, pid)
	fps := float64(satGot) / phase.Seconds()
	t.Logf("hub with %d clients (all up in %v): idle (clients' dead-after %v): %.1f %% of a core; %d MACs learned, RSS %d MiB; "+
		"%d broadcasts: %d of %d copies delivered, %.2f CPU s; "+
		"at 20 frames/s per client %d of %d arrived; saturated: %d of %d frames relayed in %v (%.0f frames/s) using %.2f CPU s (%.1f µs per frame), peak RSS %d MiB",
		n, upIn.Round(100*time.Millisecond), deadAfter, 100*idleCPU, macCount, rss/1024,
		n, gotBC, wantBC, bcCPU.Seconds(),
		got, sent, satGot, satSent, phase, fps, satCPU.Seconds(), satCPU.Seconds()*1e6/max(float64(satGot), 1), hwm/1024)
	if satGot == 0 {
		t.Error("no frame relayed at saturation")
	}
}
