package control

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab"
)

// fakeCable answers as a cable with one peer up and two MACs would.
type fakeCable struct{}

func (fakeCable) Status() cab.Status {
	return cab.Status{Peers: []cab.PeerStatus{{Name: "b", Up: true, RxFrames: 3, Transport: "udp"}}, FDB: 2}
}

func (fakeCable) FDB() []cab.FDBEntry {
	return []cab.FDBEntry{{MAC: "02:00:00:00:00:01"}, {MAC: "02:00:00:00:00:02", Peer: "b"}}
}

// TestControlSocket: the socket is private, a second listener on it is
// refused, status and fdb come back as the cable gave them, and garbage
// gets an error reply without harming the socket. The real socket of a
// running cab is tested in test/ (TestControlSocket).
func TestControlSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl", "test.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Serve(ctx, ln, fakeCable{}); close(done) }()
	defer func() { cancel(); <-done }()

	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another cab") {
		t.Fatalf("second listener: %v", err)
	}

	st, _, err := Query(path, "status")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || !st.Peers[0].Up || st.Peers[0].RxFrames != 3 || st.Peers[0].Transport != "udp" || st.FDB != 2 {
		t.Fatalf("status: %+v", st)
	}
	_, fdb, err := Query(path, "fdb")
	if err != nil || len(fdb) != 2 || fdb[1].Peer != "b" {
		t.Fatalf("fdb: %v %v", fdb, err)
	}

	// Garbage, an unknown request and a huge one get an error, not a crash.
	for _, req := range []string{"\x00\xff garbage\n", "launch\n", strings.Repeat("x", 1<<20)} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go c.Write([]byte(req))
		var rep reply
		if err := json.NewDecoder(bufio.NewReader(c)).Decode(&rep); err != nil || rep.Error == "" {
			t.Errorf("request %q: reply %+v, err %v; want an error reply", req[:min(len(req), 20)], rep, err)
		}
		c.Close()
	}
	if _, _, err := Query(path, "status"); err != nil {
		t.Fatalf("control socket dead after garbage: %v", err)
	}
}
