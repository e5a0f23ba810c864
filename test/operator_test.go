package cabtest

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestZeroConfigPaste: the lines a zero-config server prints work as
// printed: the client's command line with the server's real address, and
// the pubkey line of the client's key added to the allow file the server
// names.
func TestZeroConfigPaste(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	srv := a.cab(t, "server", "-s", "tap:"+tapDev)
	cmdRE := regexp.MustCompile(`on a client: cab client --server-key (\S+) (\S+)`)
	allowRE := regexp.MustCompile(`add the line it prints to (\S+) on this server`)
	if !waitFor(10*time.Second, func() bool { return allowRE.MatchString(srv.output()) || srv.exited() }) || srv.exited() {
		t.Fatalf("%s printed no client command line (%s)", srv.name, srv.state())
	}
	out := srv.output()
	if strings.Contains(out, "THIS_HOST") {
		t.Errorf("the server printed a placeholder, not its address:\n%s", out)
	}
	m := cmdRE.FindStringSubmatch(out)
	if m == nil || m[2] != a.v4+":7667" {
		t.Fatalf("client command line %q, want the address %s:7667:\n%s", m, a.v4, out)
	}
	if !strings.Contains(out, "cab pubkey < /var/lib/cab/client.key") {
		t.Errorf("the server does not say which side runs cab pubkey on which file:\n%s", out)
	}
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--server-key", m[1], m[2])
	key := b.path("state/client.key")
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(key); return err == nil }) {
		t.Fatalf("the client made no %s (%s)", key, cli.state())
	}
	f, err := os.OpenFile(allowRE.FindStringSubmatch(out)[1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(pubkey(t, key) + " site-b\n")
	f.Close()
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, 20*time.Second, srv, cli)
	checkPing(t, a, b)
}

// TestJSONLogs: with --log-format json every line on stderr is a JSON
// object, the notes at start included, on both sides.
func TestJSONLogs(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--log-format", "json")
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--log-format", "json", a.v4+":"+port)
	up := `"msg":"peer up"`
	for _, p := range []*proc{srv, cli} {
		if !waitFor(upTimeout, func() bool { return strings.Contains(p.stderr.String(), up) || p.exited() }) || p.exited() {
			t.Fatalf("%s: no peer up (%s)", p.name, p.state())
		}
	}
	for _, p := range []*proc{srv, cli} {
		lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
		if len(lines) < 3 {
			t.Errorf("%s: %d lines, want the notes, cable up and peer up", p.name, len(lines))
		}
		for _, l := range lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil {
				t.Errorf("%s: not a JSON log line: %q", p.name, l)
			}
		}
	}
	if !strings.Contains(srv.stderr.String(), `"msg":"any client holding the pre-shared key is accepted"`) {
		t.Errorf("the server's notes are not in its JSON log:\n%s", srv.stderr.String())
	}
}

// TestFallbackNotYet: a client with udp,tcp,dns://ZONE whose resolver has
// no route yet starts on UDP (it used to exit), says the dns carrier waits,
// and reaches the server.
func TestFallbackNotYet(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,tcp,dns://t.example.com",
		"--resolver", "203.0.113.53", a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	if !strings.Contains(cli.stderr.String(), "cannot start yet") {
		t.Errorf("the client does not say its dns carrier waits:\n%s", cli.stderr.String())
	}
	checkPing(t, a, b)
}
