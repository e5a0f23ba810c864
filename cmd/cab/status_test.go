package main

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab"
	"cab/transport"
)

// TestPipe: cab pipe joins stdin and stdout to a unix socket, both ways,
// and ends when the socket's side ends.
func TestPipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("from server"))
		b := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadAtLeast(c, b, len("from client"))
		got <- b[:n]
		c.Close()
	}()
	var stdout, stderr bytes.Buffer
	code := run([]string{"pipe", "--socket", path}, strings.NewReader("from client"), &stdout, &stderr)
	if code != 0 || stdout.String() != "from server" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if b := <-got; string(b) != "from client" {
		t.Fatalf("server got %q", b)
	}
	// No server: a clear error.
	stderr.Reset()
	if code := run([]string{"pipe", "--socket", path + ".none"}, strings.NewReader(""), &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "is cab server --name") {
		t.Errorf("no server: exit %d, %q", code, stderr.String())
	}
}

// TestPrintStatusPath: a peer whose transport reports its path gets a line
// with the figures; others get none.
func TestPrintStatusPath(t *testing.T) {
	st := &cab.Status{Peers: []cab.PeerStatus{
		{Name: "hq", PublicKey: "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=", Up: true, Transport: "dns",
			Path: &transport.PathStats{QueriesPerSecond: 12.5, Loss: 0.031, RTT: 42 * time.Millisecond, Queries: 900}},
		{Name: "branch", PublicKey: "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=", Transport: "udp"},
	}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	if !strings.Contains(out, "hq over dns: 12.5 queries/s, 3.1% lost, rtt 42ms, 900 queries") {
		t.Errorf("no path line for hq:\n%s", out)
	}
	if strings.Contains(out, "branch over") {
		t.Errorf("a path line for a udp peer:\n%s", out)
	}
}

// TestPrintStatusWords: cab status says in words why it dropped what, for
// every reason the cable counts, and names a second client with a key.
func TestPrintStatusWords(t *testing.T) {
	for _, r := range cab.DropReasons() {
		if dropLabels[r] == "" {
			t.Errorf("drop reason %q has no words in dropLabels", r)
		}
	}
	st := &cab.Status{Peers: []cab.PeerStatus{{Name: "hq", PublicKey: "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=", Up: true,
		Drops:        map[string]uint64{"auth": 3, "runt": 1},
		DuplicateKey: &cab.DuplicateKey{Kept: "192.0.2.3:4000", HeldOff: "192.0.2.2:4000", HeldUntil: time.Now().Add(20 * time.Second)}}},
		Drops: map[string]uint64{"dns_nxdomain": 2}}
	var b bytes.Buffer
	printStatus(&b, st)
	for _, want := range []string{
		"hq dropped: 3 failed authentication (a wrong key or PSK, or forged), 1 malformed",
		"hq: two clients use this key: keeping 192.0.2.3:4000, holding 192.0.2.2:4000 off for 2",
		"dropped before a peer was known: 2 dns nxdomain",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("cab status lacks %q:\n%s", want, b.String())
		}
	}
}

// TestPrintSegments: cab status lists the segments and why a peer was
// refused one; --fdb shows every entry's segment.
func TestPrintSegments(t *testing.T) {
	st := &cab.Status{
		Peers: []cab.PeerStatus{{Name: "c1", PublicKey: "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=", Up: true,
			Segments: []string{"blue"}, Refused: map[string]string{"red": "not allowed for this key"}}},
		Segments: []cab.SegmentStatus{{Name: "blue", ID: 0xdeadbeef, Peers: []string{"c1"}, MACs: 2, FromPeers: 10, FromPort: 20}, {Name: "red", ID: 1, Peers: []string{}}},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	for _, want := range []string{"SEGMENT", "blue     deadbeef  c1", "red      00000001  -", "c1: segment red: not allowed for this key"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("cab status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printFDB(&b, []cab.FDBEntry{{MAC: "02:00:00:00:00:02", Segment: "red"}, {MAC: "02:00:00:00:00:01", Segment: "blue", Peer: "c1"}, {MAC: "02:00:00:00:00:03", Segment: "default"}})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEGMENT") || !strings.HasPrefix(lines[1], "default") || !strings.HasPrefix(lines[2], "blue") || !strings.HasPrefix(lines[3], "red") {
		t.Errorf("cab status --fdb:\n%s", b.String())
	}
}
