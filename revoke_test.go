package cab

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// allowList is a Config.Allow that a test edits.
type allowList struct {
	mu   sync.Mutex
	keys map[crypto.PublicKey]string
}

func (a *allowList) lookup(k crypto.PublicKey) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name, ok := a.keys[k]
	return name, ok
}

func (a *allowList) set(k crypto.PublicKey, name string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ok {
		a.keys[k] = name
	} else {
		delete(a.keys, k)
	}
}

// syncLog is a log sink safe for concurrent use.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRevokeAtOnce: a key taken out of the allow list loses its session at
// once (within a tick, not when its session expires): it is removed from
// the status with a "peer removed" line, its frames are dropped as not
// allowed, and its MACs are forgotten. A new name for a listed key renames
// the peer and keeps its session.
func TestRevokeAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey, ckey := mustKey(t), mustKey(t)
		allow := &allowList{keys: map[crypto.PublicKey]string{ckey.Public(): "branch"}}
		var log syncLog
		server := startSite(t, Config{PrivateKey: skey, Responder: true, Allow: allow.lookup,
			Logger: slog.New(slog.NewTextHandler(&log, nil))}, n.Conn("server"))
		cconn := n.Conn("client")
		client := startSite(t, Config{PrivateKey: ckey, Peers: []PeerConfig{{Name: "server", PublicKey: skey.Public(),
			Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }}}}}, cconn)
		waitUp(t, client, 1)
		exchange(t, server, client, 5)
		hs := peerStatus(server, "branch").Handshakes

		allow.set(ckey.Public(), "branch-office", true)
		time.Sleep(time.Second)
		if p := peerStatus(server, "branch-office"); !p.Up || p.Handshakes != hs {
			t.Errorf("after a rename: %+v, want branch-office up with the same session", p)
		}
		exchange(t, server, client, 3)

		allow.set(ckey.Public(), "", false)
		time.Sleep(time.Second)
		if st := server.cable.Status(); len(st.Peers) != 0 || st.FDB != 1 {
			t.Errorf("a second after the key was removed: %d peers, %d MACs; want none of the client's", len(st.Peers), st.FDB)
		}
		if !strings.Contains(log.String(), `msg="peer removed" peer=branch-office`) {
			t.Errorf("no peer removed line:\n%s", log.String())
		}
		before := dropCount(server, "not allowed")
		client.port.Inject(testFrame(0xaa, 0xb1, 1, 100))
		waitDrops(t, server, "not allowed", before)
		if len(server.port.Frames()) != 0 {
			t.Error("a frame from the removed client arrived")
		}
	})
}
