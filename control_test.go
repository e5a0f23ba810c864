package cab

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
)

func TestControlSocket(t *testing.T) {
	server, client := startPair(t, pairOpts{serverPSK: psk(8), clientPSK: psk(8)})
	waitUp(t, client, 1)
	exchange(t, server, client, 3)

	path := filepath.Join(t.TempDir(), "ctl", "test.sock")
	ln, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { server.cable.ServeControl(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()

	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	if _, err := ListenControl(path); err == nil || !strings.Contains(err.Error(), "another cab") {
		t.Fatalf("second listener: %v", err)
	}

	st, _, err := QueryControl(path, "status")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || !st.Peers[0].Up || st.Peers[0].RxFrames != 3 || st.Peers[0].Transport != "" && st.Peers[0].Transport != "udp" {
		t.Fatalf("status: %+v", st)
	}
	_, fdb, err := QueryControl(path, "fdb")
	if err != nil || len(fdb) != 2 {
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
		var reply controlReply
		if err := json.NewDecoder(bufio.NewReader(c)).Decode(&reply); err != nil || reply.Error == "" {
			t.Errorf("request %q: reply %+v, err %v; want an error reply", req[:min(len(req), 20)], reply, err)
		}
		c.Close()
	}
	if _, _, err := QueryControl(path, "status"); err != nil {
		t.Fatalf("control socket dead after garbage: %v", err)
	}
}
