package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab"
	"cab/transport"
)

func TestSSHArgv(t *testing.T) {
	o := &options{sshCommand: "ssh -T -o BatchMode=yes", sshRemote: "cab pipe --name site"}
	for in, want := range map[string]string{
		"ssh://gw.example.net":           "ssh -T -o BatchMode=yes -- gw.example.net cab pipe --name site",
		"ssh://ops@gw.example.net:2222":  "ssh -T -o BatchMode=yes -p 2222 -- ops@gw.example.net cab pipe --name site",
		"ssh://[2001:db8::1]:22":         "ssh -T -o BatchMode=yes -p 22 -- 2001:db8::1 cab pipe --name site",
		"ssh://ops@198.51.100.1/":        "ssh -T -o BatchMode=yes -- ops@198.51.100.1 cab pipe --name site",
		"ssh://-oProxyCommand=evil@host": "ssh -T -o BatchMode=yes -- -oProxyCommand=evil@host cab pipe --name site",
	} {
		got, err := sshArgv(o, in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
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
		o := &options{transports: c.list, name: "cabtest-x", listen: "127.0.0.1", port: 0, dnsListen: "127.0.0.1:0", resolver: "quic://192.0.2.1", dnsZone: c.zone}
		_, err := openTransports(o, c.server, []string{"127.0.0.1:1"}, nil)
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
		o := &options{transports: c.list, name: "cabtest-x", listen: "127.0.0.1"}
		tr, err := openTransports(o, false, c.addrs, nil)
		if err != nil {
			t.Errorf("%q %v: %v", c.list, c.addrs, err)
			continue
		}
		var got []string
		for _, n := range tr.names {
			got = append(got, strings.Fields(n)[0])
		}
		if strings.Join(got, " ") != c.want || len(tr.dialers) != len(got) {
			t.Errorf("%q %v: %v with %d dialers, want %s", c.list, c.addrs, got, len(tr.dialers), c.want)
		}
		tr.close()
	}
	if _, err := openTransports(&options{transports: "quic", name: "cabtest-x"}, false, nil, nil); err == nil || !strings.Contains(err.Error(), "needs the server's address") {
		t.Errorf("quic without an address: %v", err)
	}
	o := &options{transports: "quic://127.0.0.1:0", name: "cabtest-x"}
	tr, err := openTransports(o, true, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.conns) < 1 || !strings.HasPrefix(tr.names[0], "quic 127.0.0.1:") {
		t.Errorf("server quic://127.0.0.1:0: %v", tr.names)
	}
	tr.close()
	// udp and quic on one port: the error says they need two.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	o = &options{transports: fmt.Sprintf("udp,quic://:%d", p), port: p, listen: "127.0.0.1", name: "cabtest-x"}
	if tr, err := openTransports(o, true, nil, nil); err == nil {
		tr.close()
		t.Errorf("udp and quic both on port %d: no error", p)
	} else if !strings.Contains(err.Error(), "needs two ports") {
		t.Errorf("udp and quic both on port %d: %v, want it to say they need two ports", p, err)
	}
	o = &options{transports: "quic://127.0.0.1:0", name: "cabtest-x", quicCert: "/etc/cab/cert.pem"}
	if _, err := openTransports(o, true, nil, nil); err == nil || !strings.Contains(err.Error(), "key file") {
		t.Errorf("--quic-cert without --quic-key: %v", err)
	}
}

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

// TestTransportOrder: a client with two server addresses and
// udp,tcp,dns://ZONE tries UDP to each, then TCP to each, then the DNS
// tunnel.
func TestTransportOrder(t *testing.T) {
	o := &options{transports: "udp,tcp,dns://t.example.com", listen: "127.0.0.1", name: "cabtest-order", resolver: "127.0.0.1:1053"}
	tr, err := openTransports(o, false, []string{"127.0.0.1:1001", "127.0.0.1:1002"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	var got []string
	for _, d := range tr.dialers {
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

func transportScheme(c any) string {
	if s, ok := c.(interface{ Scheme() string }); ok {
		return s.Scheme()
	}
	return "?"
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
