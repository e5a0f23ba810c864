//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
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
	// As the README says: a PSK-only client still makes a key of its own.
	if _, err := os.Stat(b.path("state/client.key")); err != nil {
		t.Errorf("the PSK-only client made no client.key in its state directory: %v", err)
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

// TestSetupMistakesSaid: the mistakes a first-time user makes no longer
// look alike. Within about 5 s of start, a client says that no handshake
// answer came and why: nothing listens (a wrong port, UDP and TCP), or the
// likely causes (a wrong PSK); the server says why it refused (mac1
// invalid for the wrong PSK, key not allowed with the client's key).
func TestSetupMistakesSaid(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	wrong := genkey(t, b.path("wrong.psk"))
	skey := genkey(t, a.path("server.key"))
	ckey := genkey(t, b.path("client.key"))
	allow := a.path("clients.txt")
	writeFile(t, allow, "# nobody yet\n")
	psrv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	ksrv := start(t, a.ns, cabBin, "server", "-p", "6667", "-s", "tap:cab1", "--key", skey, "--allow", allow,
		"--name", a.ns+"-k", "--state-dir", a.path("state-k"))
	waitLog := func(p *proc, within time.Duration, want string) {
		t.Helper()
		if !waitFor(within, func() bool { return strings.Contains(p.stderr.String(), want) || p.exited() }) {
			t.Errorf("%s: no %q within %v:\n%s", p.name, want, within, p.stderr.String())
		}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"wrong port", []string{"--psk", psk, a.v4 + ":7000"}, "nothing listens on " + a.v4 + ":7000"},
		{"wrong port over tcp", []string{"--psk", psk, "--transport", "tcp", a.v4 + ":7000"}, "nothing listens on tcp://" + a.v4 + ":7000"},
		{"wrong psk", []string{"--psk", wrong, a.v4 + ":" + port}, "no handshake answer from " + a.v4 + ":" + port + " over udp after"},
		{"key not allowed", []string{"--key", ckey, "--server-key", pubkey(t, skey), a.v4 + ":6667"}, "this client's key is not in the server's allow file"},
	}
	for i, c := range cases {
		dev := fmt.Sprintf("tap:cab%d", i+2)
		p := start(t, b.ns, cabBin, append([]string{"client", "-s", dev, "--name", fmt.Sprintf("%s-%d", b.ns, i), "--state-dir", b.path("state")}, c.args...)...)
		waitLog(p, 10*time.Second, c.want)
		if strings.Contains(p.stderr.String(), "level=WARN") && !strings.Contains(p.stderr.String(), "level=WARN msg=\"no handshake answer") {
			t.Errorf("%s: a warning, but not the one about answers:\n%s", c.name, p.stderr.String())
		}
	}
	waitLog(psrv, 5*time.Second, `msg="handshake refused" src=`+b.v4)
	waitLog(psrv, time.Second, `reason="mac1 invalid: a wrong PSK or a wrong server key"`)
	waitLog(ksrv, 5*time.Second, `reason="key not allowed" key=`)
	waitLog(ksrv, time.Second, pubkey(t, ckey))
}

// pingReplies returns the times of the replies in the output of ping -D.
func pingReplies(out string) []time.Time {
	var ts []time.Time
	for _, m := range regexp.MustCompile(`\[(\d+)\.(\d+)\] \d+ bytes from`).FindAllStringSubmatch(out, -1) {
		s, _ := strconv.ParseInt(m[1], 10, 64)
		us, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
		ts = append(ts, time.Unix(s, us*1000))
	}
	return ts
}

// TestRevokeAtOnce: removing a client's key from the allow file revokes it
// at once: with a ping every 0.1 s, no reply comes later than 1 s after the
// edit, the server logs "peer removed" and cab status no longer lists it.
// Listing the key again with a name lets it back in under that name, and a
// new name on its line renames it, without a restart.
func TestRevokeAtOnce(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	skey := genkey(t, a.path("server.key"))
	ckey := genkey(t, b.path("client.key"))
	allow := a.path("clients.txt")
	line := pubkey(t, ckey)
	writeFile(t, allow, line+" site-b\n")
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--key", skey, "--allow", allow)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--key", ckey, "--server-key", pubkey(t, skey), "--keepalive", "2s", a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	waitPing(t, upTimeout, b.ns, overlayA)

	pinger := start(t, b.ns, "ping", "-n", "-D", "-i", "0.1", "-W", "1", overlayA)
	time.Sleep(time.Second)
	writeFile(t, allow, "# site-b revoked\n")
	revoked := time.Now()
	time.Sleep(3 * time.Second)
	pinger.signal(syscall.SIGINT)
	pinger.wait(5 * time.Second)
	replies := pingReplies(pinger.stdout.String())
	if len(replies) < 5 || replies[0].After(revoked) {
		t.Fatalf("%d replies before the edit; the check below would prove nothing:\n%s", len(replies), pinger.stdout.String())
	}
	if last := replies[len(replies)-1]; last.Sub(revoked) > time.Second {
		t.Errorf("a reply %v after the key was removed, want none after 1 s", last.Sub(revoked).Round(time.Millisecond))
	}
	if !strings.Contains(srv.stderr.String(), `msg="peer removed" peer=site-b`) {
		t.Errorf("no peer removed line:\n%s", srv.stderr.String())
	}
	if ps := statusOf(t, a); len(ps) != 0 {
		t.Errorf("cab status lists %+v after the key was removed", ps)
	}

	writeFile(t, allow, line+" branch\n")
	if !waitFor(20*time.Second, func() bool { ps := statusOf(t, a); return len(ps) == 1 && ps[0].Up && ps[0].Name == "branch" }) {
		t.Fatalf("listed again as branch: status %+v", statusOf(t, a))
	}
	waitPing(t, upTimeout, b.ns, overlayA)
	writeFile(t, allow, line+" branch-office\n")
	if !waitFor(5*time.Second, func() bool { ps := statusOf(t, a); return len(ps) == 1 && ps[0].Up && ps[0].Name == "branch-office" }) {
		t.Errorf("renamed in the allow file: status %+v", statusOf(t, a))
	}
	if n := ping(t, b.ns, overlayA, 3); n != 3 {
		t.Errorf("after the rename: %d of 3 pings", n)
	}
}

// TestReloadPeers: a reload adds a [[peer]], removes one, renames one and
// changes one's key, each at once, while an unchanged client pings
// through all of it and loses nothing.
func TestReloadPeers(t *testing.T) {
	srv, clients := hubSites(t, 3)
	skey := genkey(t, srv.path("server.key"))
	var pubs []string
	for _, c := range clients {
		pubs = append(pubs, pubkey(t, genkey(t, c.path("client.key"))))
	}
	type entry struct {
		name string
		key  int
	}
	conf := func(es ...entry) string {
		var b strings.Builder
		fmt.Fprintf(&b, "local = %q\nlisten_port = %s\nkey = %q\n", "tap:"+tapDev, port, skey)
		for _, e := range es {
			fmt.Fprintf(&b, "\n[[peer]]\nname = %q\npublic_key = %q\n", e.name, pubs[e.key])
		}
		return b.String()
	}
	file := srv.path("hub.toml")
	writeFile(t, file, conf(entry{"c1", 0}, entry{"c2", 1}))
	sp := srv.cab(t, "server", "-f", file)
	setupTap(t, srv, sp, overlayA)
	for i, c := range clients {
		p := c.cab(t, "client", "-s", "tap:"+tapDev, "--key", c.path("client.key"), "--server-key", pubkey(t, skey),
			"--keepalive", "2s", srv.v4+":"+port)
		setupTap(t, c, p, fmt.Sprintf("192.0.2.%d", i+2))
	}
	waitPing(t, upTimeout, clients[0].ns, overlayA)
	waitPing(t, upTimeout, clients[1].ns, overlayA)
	pinger := start(t, clients[0].ns, "ping", "-n", "-i", "0.1", "-W", "1", overlayA)

	reloads := 0
	reload := func(es ...entry) {
		t.Helper()
		writeFile(t, file, conf(es...))
		sp.signal(syscall.SIGHUP)
		reloads++
		if !waitFor(5*time.Second, func() bool { return strings.Count(sp.stderr.String(), "msg=reloaded") == reloads }) {
			t.Fatalf("reload %d not applied:\n%s", reloads, sp.stderr.String())
		}
	}
	up := func(name string) bool {
		for _, p := range statusOf(t, srv) {
			if p.Name == name {
				return p.Up
			}
		}
		return false
	}
	listed := func(name string) bool {
		for _, p := range statusOf(t, srv) {
			if p.Name == name {
				return true
			}
		}
		return false
	}

	reload(entry{"c1", 0}, entry{"c2", 1}, entry{"c3", 2}) // add
	if !waitFor(20*time.Second, func() bool { return up("c3") }) {
		t.Fatalf("added c3 not up: %+v", statusOf(t, srv))
	}
	waitPing(t, upTimeout, clients[2].ns, overlayA)

	reload(entry{"c1", 0}, entry{"c3", 2}) // remove
	if listed("c2") || !strings.Contains(sp.stderr.String(), `msg="peer removed" peer=c2`) {
		t.Errorf("removed c2: listed %v\n%s", listed("c2"), sp.stderr.String())
	}
	if n := ping(t, clients[1].ns, overlayA, 3); n != 0 {
		t.Errorf("the removed c2 still gets %d of 3 replies", n)
	}

	reload(entry{"c1", 0}, entry{"branch", 2}) // rename
	if !up("branch") || listed("c3") {
		t.Errorf("renamed c3: %+v", statusOf(t, srv))
	}
	if n := ping(t, clients[2].ns, overlayA, 3); n != 3 {
		t.Errorf("the renamed peer gets %d of 3 replies", n)
	}

	reload(entry{"c1", 0}, entry{"branch", 1}) // a new key: c2's
	if !waitFor(20*time.Second, func() bool { return up("branch") }) {
		t.Fatalf("branch with c2's key not up: %+v", statusOf(t, srv))
	}
	waitPing(t, 20*time.Second, clients[1].ns, overlayA)
	if n := ping(t, clients[2].ns, overlayA, 3); n != 0 {
		t.Errorf("c3, whose key was replaced, still gets %d of 3 replies", n)
	}

	pinger.signal(syscall.SIGINT)
	pinger.wait(5 * time.Second)
	var sent, got int
	out := pinger.stdout.String()
	if i := strings.LastIndex(out, "packets transmitted"); i >= 0 {
		fmt.Sscanf(out[strings.LastIndex(out[:i], "\n")+1:], "%d packets transmitted, %d received", &sent, &got)
	}
	t.Logf("c1 during the reloads: %d pings, %d lost", sent, sent-got)
	if sent < 50 || got < sent-1 { // the last may be cut off by SIGINT
		t.Errorf("c1 lost %d of %d pings across the reloads", sent-got, sent)
	}
}

// TestDuplicateKeyLive: two clients started with one key. The server
// notices, warns naming the key and both addresses, and shows it in cab
// status; it keeps the newer client, whose pings get through, and holds
// the older off.
func TestDuplicateKeyLive(t *testing.T) {
	srv, clients := hubSites(t, 2)
	skey := genkey(t, srv.path("server.key"))
	ckey := genkey(t, clients[0].path("client.key"))
	b, _ := os.ReadFile(ckey)
	writeFile(t, clients[1].path("client.key"), string(b))
	os.Chmod(clients[1].path("client.key"), 0o600)
	allow := srv.path("clients.txt")
	writeFile(t, allow, pubkey(t, ckey)+" branch\n")
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--key", skey, "--allow", allow)
	setupTap(t, srv, sp, overlayA)
	var cps []*proc
	for i, c := range clients {
		p := c.cab(t, "client", "-s", "tap:"+tapDev, "--key", c.path("client.key"), "--server-key", pubkey(t, skey),
			"--keepalive", "2s", srv.v4+":"+port)
		setupTap(t, c, p, fmt.Sprintf("192.0.2.%d", i+2))
		cps = append(cps, p)
		waitPeerUp(t, upTimeout, p)
		waitPing(t, upTimeout, c.ns, overlayA)
	}
	// Both ping now; the server sees the key's packets come from two places.
	p1 := start(t, clients[0].ns, "ping", "-n", "-i", "0.2", "-W", "1", overlayA)
	p2 := start(t, clients[1].ns, "ping", "-n", "-i", "0.2", "-W", "1", overlayA)
	want := fmt.Sprintf(`msg="two clients use one key: keeping the newer, holding the other off" peer=branch key=%s kept=%s:`,
		pubkey(t, ckey)[:8], clients[1].v4)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(sp.stderr.String(), want) }) {
		t.Fatalf("no warning naming the key and both addresses:\n%s", sp.stderr.String())
	}
	if !strings.Contains(sp.stderr.String(), "held_off="+clients[0].v4+":") {
		t.Errorf("the warning does not name the older client's address:\n%s", sp.stderr.String())
	}
	out := mustRun(t, "ip", "netns", "exec", srv.ns, cabBin, "status", "--name", srv.ns)
	if !strings.Contains(out, "branch: two clients use this key: keeping "+clients[1].v4) {
		t.Errorf("cab status does not show it:\n%s", out)
	}
	p1.signal(syscall.SIGINT)
	p2.signal(syscall.SIGINT)
	p1.wait(5 * time.Second)
	p2.wait(5 * time.Second)
	if n := ping(t, clients[1].ns, overlayA, 5); n != 5 {
		t.Errorf("the newer client gets %d of 5 replies", n)
	}
	if n := ping(t, clients[0].ns, overlayA, 5); n != 0 {
		t.Errorf("the older client, held off, gets %d of 5 replies", n)
	}
	if changes := strings.Count(sp.stderr.String(), `msg="path changed"`); changes > 10 {
		t.Errorf("%d path changes: the clients still flap", changes)
	}
}

// TestREADMEOneMachine runs the README's "try it on one machine" recipe as
// it is written, with names of its own for the namespaces and this test's
// cab, and wants its ping answered and cab status to show the peer up.
func TestREADMEOneMachine(t *testing.T) {
	needRoot(t)
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### Try it on one machine\n.*?```sh\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("no recipe in the README")
	}
	id := randomID(t)
	nsA, nsB := "cab-"+id+"-ra", "cab-"+id+"-rb"
	t.Cleanup(func() {
		run(10*time.Second, "ip", "netns", "del", nsA)
		run(10*time.Second, "ip", "netns", "del", nsB)
	})
	dir := t.TempDir()
	script := strings.NewReplacer("sudo ", "", "./cab ", cabBin+" ", "/tmp/site-a", dir+"/state-a", "/tmp/site-b", dir+"/state-b",
		"site-a", nsA, "site-b", nsB).Replace(string(m[1]))
	script = regexp.MustCompile(`(?m)^cab `).ReplaceAllString(script, cabBin+" ")
	// The recipe leaves its two cabs running; here they end with the script.
	script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !regexp.MustCompile(`[123] received`).Match(out) || !strings.Contains(string(out), " up ") {
		t.Errorf("the recipe: %v\n%s", err, out)
	}
}
