package cab

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"

	"cab/crypto"
	"cab/transport"
)

func TestStableMAC(t *testing.T) {
	k1, k2 := mustKey(t).Public(), mustKey(t).Public()
	a, b := StableMAC(k1, "cab0"), StableMAC(k1, "cab0")
	if a.String() != b.String() {
		t.Fatal("not stable")
	}
	if StableMAC(k2, "cab0").String() == a.String() || StableMAC(k1, "cab1").String() == a.String() {
		t.Fatal("not distinct")
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Fatalf("%v is not a locally administered unicast MAC", a)
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":        "192.0.2.1:7667",
		"192.0.2.1:6666":   "192.0.2.1:6666",
		"2001:db8::1":      "[2001:db8::1]:7667",
		"[2001:db8::1]":    "[2001:db8::1]:7667",
		"[2001:db8::1]:66": "[2001:db8::1]:66",
		"example.net":      "example.net:7667",
	} {
		if got := WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSSHArgv(t *testing.T) {
	o := &Settings{SSHCommand: "ssh -T -o BatchMode=yes", SSHRemote: "cab pipe --name site"}
	ciphers := ""
	if c := sshCiphers(crypto.LocalCiphers()[0] == crypto.CipherAES256GCM); c != "" {
		ciphers = " -o " + c
	}
	for in, want := range map[string]string{
		"ssh://gw.example.net":           "ssh -T -o BatchMode=yes" + ciphers + " -- gw.example.net cab pipe --name site",
		"ssh://ops@gw.example.net:2222":  "ssh -T -o BatchMode=yes" + ciphers + " -p 2222 -- ops@gw.example.net cab pipe --name site",
		"ssh://[2001:db8::1]:22":         "ssh -T -o BatchMode=yes" + ciphers + " -p 22 -- 2001:db8::1 cab pipe --name site",
		"ssh://ops@198.51.100.1/":        "ssh -T -o BatchMode=yes" + ciphers + " -- ops@198.51.100.1 cab pipe --name site",
		"ssh://-oProxyCommand=evil@host": "ssh -T -o BatchMode=yes" + ciphers + " -- -oProxyCommand=evil@host cab pipe --name site",
	} {
		got, err := sshArgv(o, in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	// An option's argument is not an option: -i's file named -c chooses nothing.
	if choosesCipher([]string{"-i", "-c", "-T"}) || choosesCipher([]string{"-o", "ControlPath=/c", "-p", "22"}) {
		t.Error("choosesCipher took an option's argument for an option")
	}
	if c := sshCiphers(true); !strings.HasPrefix(c, "Ciphers=aes128-gcm@openssh.com,") || !strings.Contains(c, "chacha20-poly1305@openssh.com") {
		t.Errorf("with AES instructions: %q, want AES-GCM first and the others after", c)
	}
	if c := sshCiphers(false); c != "" {
		t.Errorf("without AES instructions: %q, want ssh's own preference", c)
	}
	// A command that chooses its cipher keeps it.
	for _, cmd := range []string{"ssh -c chacha20-poly1305@openssh.com", "ssh -o Ciphers=aes256-ctr", "ssh -oCiphers=aes256-ctr",
		"ssh -caes256-ctr", "ssh -Tc aes256-ctr", "ssh -o ciphers aes256-ctr", "ssh -i /k/-c -o Ciphers=aes256-ctr"} {
		got, err := sshArgv(&Settings{SSHCommand: cmd, SSHRemote: "cab pipe"}, "ssh://h")
		if want := cmd + " -- h cab pipe"; err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s: %q, %v; want %q", cmd, got, err, want)
		}
	}
	for _, bad := range []string{"ssh://", "ssh://host/path", "ssh://%zz"} {
		if _, err := sshArgv(o, bad); err == nil || !strings.Contains(err.Error(), "ssh://[USER@]HOST[:PORT]") {
			t.Errorf("%s: %v, want an error naming the form", bad, err)
		}
	}
}

func TestTransportListErrors(t *testing.T) {
	for _, c := range []struct {
		server bool
		list   string
		want   string
		zone   string
	}{
		{false, "udp,quick", "use udp, quic[://[HOST][:PORT]], tcp, ssh://", ""},
		{false, "quic://:99999", "not a port", ""},
		{false, "quic://:0", "not a port", ""},
		{false, "quic://host/path", "use quic://[HOST][:PORT]", ""},
		{true, "quic://127.0.0.1:x", "not a port", ""},
		{false, "tcp,tcp", "twice", ""},
		{false, "unix://relative", "unix:///ABSOLUTE/PATH", ""},
		{true, "ssh://host", "a server listens on udp, quic[://[HOST]:PORT], tcp, dns (with --dns-zone) and unix:///PATH", ""},
		{true, "dns", "--dns-zone t.example.com", ""},
		{true, "dns://bad..zone", "bad label", ""},
		{false, "dns", "--transport dns://t.example.com", ""},
		{false, "dns://t.example.com", "--resolver", ""}, // the resolver below is not HOST[:PORT]
		{true, "dns", "--dns-zone: dnstun: zone \"bad..zone\": bad label", "bad..zone"},
		{true, "udp", "add dns to --transport", "t.example.com"},
		{false, "udp", "only dns://ZONE transports use it", ""},
	} {
		o := &Settings{Role: role(c.server), Transport: c.list, Name: "cabtest-x", Listen: "127.0.0.1", ListenPort: 0, DNSListen: "127.0.0.1:0", Resolver: "quic://192.0.2.1", DNSZone: c.zone, Servers: []string{"127.0.0.1:1"}}
		_, err := OpenCarriers(o, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("server=%v %q: %v, want %q", c.server, c.list, err, c.want)
		}
	}
}

// TestQUICItems: where quic items listen and what they dial.
func TestQUICItems(t *testing.T) {
	for _, c := range []struct {
		list  string
		addrs []string
		want  string
	}{
		{"quic", []string{"192.0.2.1:6666", "[2001:db8::1]", "gw.example.net"}, "quic://192.0.2.1:443 quic://[2001:db8::1]:443 quic://gw.example.net:443"},
		{"udp,quic://:8443", []string{"192.0.2.1"}, "udp quic://192.0.2.1:8443"},
		{"quic://gw.example.net", nil, "quic://gw.example.net:443"},
		{"quic://[2001:db8::2]:4433", []string{"192.0.2.1"}, "quic://[2001:db8::2]:4433"},
	} {
		o := &Settings{Role: "client", Transport: c.list, Name: "cabtest-x", Listen: "127.0.0.1", Servers: c.addrs}
		tr, err := OpenCarriers(o, nil)
		if err != nil {
			t.Errorf("%q %v: %v", c.list, c.addrs, err)
			continue
		}
		var got []string
		for _, n := range tr.Names {
			got = append(got, strings.Fields(n)[0])
		}
		if strings.Join(got, " ") != c.want || len(tr.Dialers) != len(got) {
			t.Errorf("%q %v: %v with %d dialers, want %s", c.list, c.addrs, got, len(tr.Dialers), c.want)
		}
		tr.Close()
	}
	if _, err := OpenCarriers(&Settings{Role: "client", Transport: "quic", Name: "cabtest-x"}, nil); err == nil || !strings.Contains(err.Error(), "needs the server's address") {
		t.Errorf("quic without an address: %v", err)
	}
	o := &Settings{Role: "server", Transport: "quic://127.0.0.1:0", Name: "cabtest-x"}
	tr, err := OpenCarriers(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Conns) < 1 || !strings.HasPrefix(tr.Names[0], "quic 127.0.0.1:") {
		t.Errorf("server quic://127.0.0.1:0: %v", tr.Names)
	}
	tr.Close()
	// udp and quic on one port: the error says they need two.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	o = &Settings{Role: "server", Transport: fmt.Sprintf("udp,quic://:%d", p), ListenPort: p, Listen: "127.0.0.1", Name: "cabtest-x"}
	if tr, err := OpenCarriers(o, nil); err == nil {
		tr.Close()
		t.Errorf("udp and quic both on port %d: no error", p)
	} else if !strings.Contains(err.Error(), "needs two ports") {
		t.Errorf("udp and quic both on port %d: %v, want it to say they need two ports", p, err)
	}
	o = &Settings{Role: "server", Transport: "quic://127.0.0.1:0", Name: "cabtest-x", QUICCert: "/etc/cab/cert.pem"}
	if _, err := OpenCarriers(o, nil); err == nil || !strings.Contains(err.Error(), "key file") {
		t.Errorf("--quic-cert without --quic-key: %v", err)
	}
}

// TestTransportOrder: a client with two server addresses and
// udp,tcp,dns://ZONE tries UDP to each, then TCP to each, then the DNS
// tunnel.
func TestTransportOrder(t *testing.T) {
	o := &Settings{Role: "client", Transport: "udp,tcp,dns://t.example.com", Listen: "127.0.0.1", Name: "cabtest-order", Resolver: "127.0.0.1:1053",
		Servers: []string{"127.0.0.1:1001", "127.0.0.1:1002"}}
	tr, err := OpenCarriers(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var got []string
	for _, d := range tr.Dialers {
		a, err := d.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, transportScheme(d.Conn)+" "+a.String())
	}
	want := []string{"udp 127.0.0.1:1001", "udp 127.0.0.1:1002", "tcp tcp://127.0.0.1:1001", "tcp tcp://127.0.0.1:1002", "dns dns://t.example.com"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("dialers %q, want %q", got, want)
	}
}

func transportScheme(c transport.Conn) string {
	if s := transportName(c); s != "" {
		return s
	}
	return "?"
}

func role(server bool) string {
	if server {
		return "server"
	}
	return "client"
}

// TestFallbackNotYet: a fallback carrier that cannot start yet (the DNS
// resolver unreachable) does not stop the carriers before it; it is tried
// again when the cable dials over it, and works once it can start. As the
// first carrier, the same failure is an error at start.
func TestFallbackNotYet(t *testing.T) {
	real := dialDNS
	defer func() { dialDNS = real }()
	fail := true
	dialDNS = func(zone, resolver string, log *slog.Logger) (interface {
		transport.Conn
		Remote() transport.Addr
	}, error) {
		if fail {
			return nil, &net.OpError{Op: "dial", Net: "udp", Err: syscall.ENETUNREACH}
		}
		return real(zone, resolver, log)
	}
	o := &Settings{Role: "client", Transport: "udp,dns://t.example.com", Listen: "127.0.0.1", Name: "cabtest-notyet",
		Resolver: "127.0.0.1:1053", Servers: []string{"127.0.0.1:1001"}}
	tr, err := OpenCarriers(o, nil)
	if err != nil {
		t.Fatalf("udp,dns with the resolver unreachable: %v, want udp to start", err)
	}
	defer tr.Close()
	if len(tr.Dialers) != 2 || !strings.Contains(tr.Names[1], "not started yet") {
		t.Fatalf("dialers %d, names %q", len(tr.Dialers), tr.Names)
	}
	d := tr.Dialers[1]
	if _, err := d.Resolve(); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("dialing over the dns carrier while it cannot start: %v", err)
	}
	if err := d.Conn.WriteBatch([]transport.Packet{{B: []byte{1}}}); err != nil {
		t.Errorf("a write before it started: %v, want the packet lost", err)
	}
	fail = false
	a, err := d.Resolve()
	if err != nil || a.String() != "dns://t.example.com" || transportName(d.Conn) != "dns" || d.Conn.MaxPacket() < 1500 {
		t.Errorf("once it can start: addr %v, err %v, scheme %q", a, err, transportName(d.Conn))
	}
	fail = true
	o.Transport = "dns://t.example.com"
	if tr, err := OpenCarriers(o, nil); err == nil {
		tr.Close()
		t.Errorf("dns as the only carrier, unreachable: no error at start")
	}
}

// TestQUICGarbageTarget: a cab that carries QUIC lets the heap grow to
// quicGCPercent between collections, unless GOGC says otherwise; one that
// does not leaves Go's default.
func TestQUICGarbageTarget(t *testing.T) {
	gcPercent := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	orig := gcPercent()
	defer debug.SetGCPercent(orig)
	debug.SetGCPercent(100)
	tr, err := OpenCarriers(&Settings{Role: "server", Transport: "udp", Listen: "127.0.0.1", Name: "cabtest-x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if got := gcPercent(); got != 100 {
		t.Errorf("udp alone: GOGC %d, want 100", got)
	}
	quicGC = sync.Once{} // as in a fresh process
	tr, err = OpenCarriers(&Settings{Role: "server", Transport: "quic://127.0.0.1:0", Name: "cabtest-x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	want := quicGCPercent
	if _, set := os.LookupEnv("GOGC"); set {
		want = 100 // the environment's choice stands
	}
	if got := gcPercent(); got != want {
		t.Errorf("quic: GOGC %d, want %d", got, want)
	}
	debug.SetGCPercent(100)
	if gcForQUIC(func(string) (string, bool) { return "50", true }) || gcPercent() != 100 {
		t.Errorf("GOGC=50 in the environment: changed to %d", gcPercent())
	}
	if !gcForQUIC(func(string) (string, bool) { return "", false }) || gcPercent() != quicGCPercent {
		t.Errorf("no GOGC in the environment: %d, want %d", gcPercent(), quicGCPercent)
	}
}
