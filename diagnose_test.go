package cab

import (
	"log/slog"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// logTo returns a logger that writes text lines to l.
func logTo(l *syncLog) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// refusingConn is a carrier that knows nothing listens where it dials.
type refusingConn struct{ *transporttest.Conn }

func (refusingConn) Scheme() string                           { return "udp" }
func (refusingConn) CheckReach(transport.Addr) error          { return syscall.ECONNREFUSED }
func (r refusingConn) WriteBatch(ps []transport.Packet) error { return r.Conn.WriteBatch(ps) }

// dialSite starts a client of server key skey at addr "server" over conn.
func dialSite(t *testing.T, key crypto.PrivateKey, psk *crypto.Secret, skey crypto.PublicKey, conn transport.Conn, log *syncLog) *site {
	return startSite(t, Config{PrivateKey: key, PSK: psk, Logger: logTo(log), Peers: []PeerConfig{{Name: "server", PublicKey: skey,
		Dial: &Dialer{Conn: conn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }}}}}, conn)
}

// TestNoAnswerWarning: a client whose handshakes go unanswered says so at
// Warn level within about 5 s, with the addr, the carrier, the tries and
// the likely causes; then again only after a backoff; and exactly "nothing
// listens" where the carrier can tell.
func TestNoAnswerWarning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		var log syncLog
		dialSite(t, mustKey(t), nil, mustKey(t).Public(), n.Conn("client"), &log) // nothing at "server"
		warn := regexp.MustCompile(`level=WARN msg="no handshake answer from server over its carrier after (\d+) tries; likely: the server is not running or the port is wrong; the PSK or the server key does not match; this client's key is not in the server's allow file; another client holds this key; its carrier is blocked on the path"`)
		time.Sleep(4 * time.Second)
		if warn.MatchString(log.String()) {
			t.Fatalf("warned before 5 s:\n%s", log.String())
		}
		time.Sleep(2 * time.Second)
		m := warn.FindAllStringSubmatch(log.String(), -1)
		if len(m) != 1 || m[0][1] < "2" {
			t.Fatalf("after 6 s: %d warnings (%v), want one after a few tries:\n%s", len(m), m, log.String())
		}
		time.Sleep(8 * time.Second)
		if got := len(warn.FindAllString(log.String(), -1)); got != 1 {
			t.Errorf("%d warnings after 14 s, want still one (backoff)", got)
		}
		time.Sleep(4 * time.Second)
		if got := len(warn.FindAllString(log.String(), -1)); got != 2 {
			t.Errorf("%d warnings after 18 s, want two", got)
		}

		var log2 syncLog
		dialSite(t, mustKey(t), nil, mustKey(t).Public(), refusingConn{n.Conn("client2")}, &log2)
		time.Sleep(6 * time.Second)
		if !strings.Contains(log2.String(), `msg="no handshake answer from server over udp after 3 tries: nothing listens on server (the server is not running there, or the port is wrong)"`) {
			t.Errorf("a refusing carrier:\n%s", log2.String())
		}
	})
}

// TestServerSaysWhy: a server logs each handshake it refuses with the
// source and the reason (mac1 invalid, key not allowed with the key), at
// most once a minute per source, then a summary of the rest; never key
// material. A client with the wrong PSK for a server that has a key of its
// own is told its answers do not authenticate.
func TestServerSaysWhy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		listed := mustKey(t)
		var slog syncLog
		startSite(t, Config{PrivateKey: skey, PSK: psk(1), Responder: true, Logger: logTo(&slog),
			Peers: []PeerConfig{{Name: "listed", PublicKey: listed.Public()}}}, n.Conn("server"))

		var wrongKey, stranger, wrongPSK syncLog
		dialSite(t, mustKey(t), psk(1), mustKey(t).Public(), n.Conn("c-wrong-key"), &wrongKey)
		strangerKey := mustKey(t)
		dialSite(t, strangerKey, psk(1), skey.Public(), n.Conn("c-stranger"), &stranger)
		dialSite(t, listed, psk(2), skey.Public(), n.Conn("c-wrong-psk"), &wrongPSK)
		time.Sleep(30 * time.Second)
		out := slog.String()
		for _, want := range []string{
			`msg="handshake refused" src=c-wrong-key reason="mac1 invalid: a wrong PSK or a wrong server key"`,
			`msg="handshake refused" src=c-stranger reason="key not allowed" key=` + strangerKey.Public().Short() + ` public_key="` + strangerKey.Public().String() + `"`,
		} {
			if strings.Count(out, want) != 1 {
				t.Errorf("server log has %d of %q, want 1:\n%s", strings.Count(out, want), want, out)
			}
		}
		if !strings.Contains(wrongPSK.String(), `msg="a handshake answer from server does not authenticate: the PSK does not match the server's"`) {
			t.Errorf("the client with the wrong PSK was not told:\n%s", wrongPSK.String())
		}
		time.Sleep(time.Minute)
		if !regexp.MustCompile(`msg="more handshakes refused in the last minute" count=\d+ reasons="key not allowed: \d+; mac1 invalid: a wrong PSK or a wrong server key: \d+"`).MatchString(slog.String()) {
			t.Errorf("no summary:\n%s", slog.String())
		}
		for _, secret := range []string{crypto.PublicKey(skey).String(), crypto.PublicKey(*psk(1)).String(), crypto.PublicKey(*psk(2)).String(), crypto.PublicKey(strangerKey).String()} {
			if strings.Contains(slog.String()+stranger.String()+wrongPSK.String()+wrongKey.String(), secret) {
				t.Errorf("key material in a log")
			}
		}
	})
}

// TestDuplicateKey: two live clients with one key are noticed within a few
// packets: the server warns naming the key and both addrs, keeps the
// client whose handshake is newer and holds the other off (its frames
// dropped and counted), and Status shows it while the hold lasts.
func TestDuplicateKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey, ckey := mustKey(t), mustKey(t)
		var log, l1, l2 syncLog
		server := startSite(t, Config{PrivateKey: skey, Responder: true, Logger: logTo(&log),
			Peers: []PeerConfig{{Name: "branch", PublicKey: ckey.Public()}}}, n.Conn("server"))
		older := dialSite(t, ckey, nil, skey.Public(), n.Conn("c1"), &l1)
		waitUp(t, older, 1)
		newer := dialSite(t, ckey, nil, skey.Public(), n.Conn("c2"), &l2)
		waitUp(t, newer, 1)
		for i := range 4 {
			older.port.Inject(testFrame(0xaa, 0xb1, uint32(i), 100))
			time.Sleep(10 * time.Millisecond)
			newer.port.Inject(testFrame(0xaa, 0xb2, uint32(i), 100))
			time.Sleep(10 * time.Millisecond)
		}
		want := `msg="two clients use one key: keeping the newer, holding the other off" peer=branch key=` + ckey.Public().Short() + ` kept=c2 held_off=c1 for=30s`
		if !strings.Contains(log.String(), want) {
			t.Fatalf("no warning naming the key and both addrs:\n%s", log.String())
		}
		d := peerStatus(server, "branch").DuplicateKey
		if d == nil || d.Kept != "c2" || d.HeldOff != "c1" {
			t.Errorf("status: %+v, want kept c2, held off c1", d)
		}
		for len(server.port.Frames()) > 0 {
			<-server.port.Frames()
		}
		before := dropCount(server, "duplicate key")
		older.port.Inject(testFrame(0xaa, 0xb1, 99, 100))
		waitDrops(t, server, "duplicate key", before)
		newer.port.Inject(testFrame(0xaa, 0xb2, 99, 100))
		if f := <-server.port.Frames(); f[11] != 0xb2 {
			t.Errorf("a frame from the client held off arrived")
		}
		time.Sleep(40 * time.Second)
		if d := peerStatus(server, "branch").DuplicateKey; d != nil {
			t.Errorf("status after the hold: %+v, want none", d)
		}
		// The one held off comes back with a new handshake once the hold
		// ends; the next hold is twice as long.
		time.Sleep(20 * time.Second)
		for i := range 4 {
			newer.port.Inject(testFrame(0xaa, 0xb2, uint32(i), 100))
			time.Sleep(10 * time.Millisecond)
			older.port.Inject(testFrame(0xaa, 0xb1, uint32(i), 100))
			time.Sleep(10 * time.Millisecond)
		}
		if !regexp.MustCompile(`peer=branch key=` + regexp.QuoteMeta(ckey.Public().Short()) + ` kept=c[12] held_off=c[12] for=1m0s`).MatchString(log.String()) {
			t.Errorf("no second hold, twice as long:\n%s", log.String())
		}
	})
}

// TestRefusalReasons: a replayed initiation and a flood over the rate
// limit are each named: the first refusal from a source by itself, the
// rest in the summary a minute later.
func TestRefusalReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey, ckey := mustKey(t), mustKey(t)
		var log syncLog
		server := startSite(t, Config{PrivateKey: skey, Responder: true, Logger: logTo(&log),
			Peers: []PeerConfig{{Name: "branch", PublicKey: ckey.Public()}}}, n.Conn("server"))
		c := server.cable
		_, msg, err := crypto.NewInitiator(ckey, skey.Public(), nil, 1, crypto.LocalCiphers(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		conn := n.Conn("x")
		now := time.Now().UnixNano()
		c.handleInit(conn, transporttest.Addr("x1"), msg, now)                         // answered
		c.handleInit(conn, transporttest.Addr("x1"), append([]byte(nil), msg...), now) // replayed
		for range 30 {
			c.handleInit(conn, transporttest.Addr("x2"), append([]byte(nil), msg...), now) // replayed, then over the limit
		}
		if !strings.Contains(log.String(), `msg="handshake refused" src=x1 reason="replayed initiation" peer=branch`) {
			t.Errorf("no replay refusal:\n%s", log.String())
		}
		time.Sleep(61 * time.Second)
		if !regexp.MustCompile(`msg="more handshakes refused in the last minute" count=\d+ reasons="rate limited: \d+; replayed initiation: \d+"`).MatchString(log.String()) {
			t.Errorf("the summary does not name the rate limit and the replays:\n%s", log.String())
		}
	})
}
