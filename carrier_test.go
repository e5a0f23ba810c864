package cab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
	"cab/transport"
	"cab/transport/transporttest"
)

// linkSites starts a server at "server" and one client per name in
// clients on n, each configured further by its mod (nil: none), and
// returns them without waiting for anything.
func linkSites(t testing.TB, n *transporttest.Network, smod func(*Config), clients []string, cmod func(*Config)) (server *site, cs []*site) {
	t.Helper()
	skey := mustKey(t)
	scfg := Config{PrivateKey: skey, PSK: psk(18), Responder: true, AllowAny: true}
	if smod != nil {
		smod(&scfg)
	}
	server = startSite(t, scfg, n.Conn("server"))
	for _, name := range clients {
		cconn := n.Conn(name)
		ccfg := Config{PrivateKey: mustKey(t), PSK: psk(18), Peers: []PeerConfig{{
			Name: "server", PublicKey: skey.Public(),
			Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}
		if cmod != nil {
			cmod(&ccfg)
		}
		cs = append(cs, startSite(t, ccfg, cconn))
	}
	return server, cs
}

// nextCarrier waits at most d for port's next SetCarrier and returns its
// value.
func nextCarrier(t testing.TB, port *bridgeiftest.Port, d time.Duration) bool {
	t.Helper()
	select {
	case up := <-port.CarrierChanges():
		return up
	case <-time.After(d):
		t.Fatalf("no SetCarrier within %v (calls so far: %v)", d, port.Carrier())
		return false
	}
}

// upCount is how many of s's peers are up.
func upCount(s *site) int {
	n := 0
	for _, p := range s.cable.Status().Peers {
		if p.Up {
			n++
		}
	}
	return n
}

// TestCarrierFollowsPeers: a client's port has carrier only while its
// server is up: down at start, up with the handshake, down when the server
// is gone, up when it is back; the server's own port is left alone.
func TestCarrierFollowsPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		var logs syncLog
		server, cs := linkSites(t, n, nil, []string{"client"}, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
		client := cs[0]
		if nextCarrier(t, client.port, 5*time.Second) {
			t.Fatal("first SetCarrier was up, want down before any peer is up")
		}
		if up := nextCarrier(t, client.port, 10*time.Second); !up {
			t.Fatal("carrier not up with the server")
		}
		if upCount(client) != 1 {
			t.Fatal("carrier up, peer not")
		}
		if st := client.cable.Status(); st.Carrier != "up" {
			t.Errorf("client status carrier %q, want up", st.Carrier)
		}
		exchange(t, server, client, 3)

		server.close(t) // the hub dies
		start := time.Now()
		// The client notices when its packets go unanswered: at most a
		// keepalive interval plus RekeyTimeout on an idle link.
		if up := nextCarrier(t, client.port, DefaultKeepalive+10*time.Second); up {
			t.Fatal("carrier went up again with the server gone")
		}
		if upCount(client) != 0 {
			t.Error("carrier down while the peer is still up")
		}
		if st := client.cable.Status(); st.Carrier != "down" {
			t.Errorf("client status carrier %q, want down", st.Carrier)
		}
		t.Logf("carrier down %v after the server stopped (idle link, default detection)", time.Since(start))

		server, _ = linkSitesServerAgain(t, n, server)
		if up := nextCarrier(t, client.port, 20*time.Second); !up {
			t.Fatal("carrier not up when the server came back")
		}
		exchange(t, server, client, 3)
		if got := fmt.Sprint(client.port.Carrier()); got != "[false true false true]" {
			t.Errorf("client SetCarrier calls %s, want [false true false true]", got)
		}
		if got := server.port.Carrier(); len(got) != 0 {
			t.Errorf("the server's port got SetCarrier %v; a server leaves its carrier on by default", got)
		}
		if st := server.cable.Status(); st.Carrier != "" {
			t.Errorf("server status carrier %q, want none", st.Carrier)
		}
		client.close(t)
		server.close(t)
		for _, want := range []string{"msg=\"carrier down\" reason=\"no peer up\"", "msg=\"carrier up\" reason=\"first peer up\" peer=server",
			"msg=\"carrier down\" reason=\"last peer down\" peer=server"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("client log lacks %s:\n%s", want, logs.String())
			}
		}
	})
}

// linkSitesServerAgain starts a server with the configuration of old, on
// the same network name, as a restarted process would.
func linkSitesServerAgain(t testing.TB, n *transporttest.Network, old *site) (*site, *transporttest.Conn) {
	t.Helper()
	conn := n.Conn("server")
	return startSite(t, old.cable.cfg, conn), conn
}

// TestCarrierServerFollow: a server told to follow (tap:…,carrier=follow)
// has carrier while any client is up: up with the first, still up when
// one of two goes, down with the last.
func TestCarrierServerFollow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		server, cs := linkSites(t, n, func(c *Config) { c.Carrier = CarrierFollow; c.DeadAfter = time.Second }, []string{"c1", "c2"}, nil)
		if nextCarrier(t, server.port, 5*time.Second) {
			t.Fatal("first SetCarrier was up, want down before any client")
		}
		if !nextCarrier(t, server.port, 10*time.Second) {
			t.Fatal("carrier not up with the first client")
		}
		waitUp(t, server, 2)
		cs[0].close(t)
		time.Sleep(5 * time.Second) // DeadAfter 1s: c1 is down by now
		if upCount(server) != 1 {
			t.Fatalf("%d clients up, want 1", upCount(server))
		}
		if got := server.port.Carrier(); len(got) != 2 {
			t.Fatalf("SetCarrier calls %v with one of two clients gone, want [false true]", got)
		}
		cs[1].close(t)
		if nextCarrier(t, server.port, 5*time.Second) {
			t.Fatal("carrier went up, want down with the last client gone")
		}
		if st := server.cable.Status(); st.Carrier != "down" || upCount(server) != 0 {
			t.Errorf("status carrier %q with %d up, want down with 0", st.Carrier, upCount(server))
		}
		server.close(t)
	})
}

// TestCarrierLeftAlone: a port without a carrier (VDE, stdio) and a client
// told carrier=on are left alone; a port whose SetCarrier fails (a kernel
// before 5.0) is warned about once and left alone from then on.
func TestCarrierLeftAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{})
		skey := mustKey(t)
		startSite(t, Config{PrivateKey: skey, PSK: psk(18), Responder: true, AllowAny: true}, n.Conn("server"))
		client := func(name string, port bridgeif.Port, mode CarrierMode, log *slog.Logger) *Cable {
			cconn := n.Conn(name)
			c, err := New(Config{PrivateKey: mustKey(t), PSK: psk(18), Carrier: mode, Logger: log, Peers: []PeerConfig{{
				PublicKey: skey.Public(),
				Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
			}}}, port, []transport.Conn{cconn})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		plain := bridgeiftest.NewPort(16)
		on := bridgeiftest.NewPort(16)
		failing := &failingCarrier{Port: bridgeiftest.NewPort(16)}
		var logs syncLog
		cables := []*Cable{
			client("plain", struct{ bridgeif.Port }{plain}, CarrierFollow, quiet),
			client("on", on, CarrierOn, quiet),
			client("failing", failing, CarrierAuto, slog.New(slog.NewTextHandler(&logs, nil))),
		}
		var wg sync.WaitGroup
		ctx, stop := context.WithCancel(context.Background())
		for _, c := range cables {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Run(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		time.Sleep(5 * time.Second)
		for i, c := range cables {
			st := c.Status()
			if len(st.Peers) != 1 || !st.Peers[0].Up {
				t.Errorf("cable %d: peer not up", i)
			}
			if st.Carrier != "" {
				t.Errorf("cable %d: status carrier %q, want none", i, st.Carrier)
			}
		}
		if got := plain.Carrier(); len(got) != 0 {
			t.Errorf("a port without a carrier got SetCarrier %v (through the fake's own method)", got)
		}
		if got := on.Carrier(); len(got) != 0 {
			t.Errorf("carrier=on: SetCarrier %v, want none", got)
		}
		if failing.calls != 1 || strings.Count(logs.String(), "cannot set the port's carrier") != 1 {
			t.Errorf("failing carrier: %d calls, log:\n%s\nwant one call and one warning", failing.calls, logs.String())
		}
		stop()
		wg.Wait()
	})
}

// failingCarrier is a port whose SetCarrier always fails, as on a kernel
// without TUNSETCARRIER.
type failingCarrier struct {
	*bridgeiftest.Port
	calls int
}

func (f *failingCarrier) SetCarrier(bool) error {
	f.calls++
	return errors.New("set carrier: invalid argument")
}
