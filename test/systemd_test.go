//go:build linux

package cabtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNotify: started with $NOTIFY_SOCKET and $WATCHDOG_USEC, as systemd's
// Type=notify with WatchdogSec does, cab says READY=1 with a STATUS once its
// port and listeners are up, pets the watchdog while it runs, updates
// STATUS when a peer comes up, and says STOPPING=1 on SIGTERM.
func TestNotify(t *testing.T) {
	a, b := newPair(t)
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	psk := genkey(t, a.path("site.psk"))
	args := []string{"NOTIFY_SOCKET=" + sockPath, "WATCHDOG_USEC=400000", cabBin,
		"server", "-p", port, "-s", "tap:" + tapDev, "--psk", psk, "--name", a.ns, "--state-dir", a.path("state")}
	srv := start(t, a.ns, "env", args...)
	var got []string
	want := func(prefix string, d time.Duration) string {
		t.Helper()
		deadline := time.After(d)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed; got %q", got)
				}
				got = append(got, m)
				if strings.HasPrefix(m, prefix) || strings.Contains(m, "\n"+prefix) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q within %v; got %q (%s)", prefix, d, got, srv.output())
				return ""
			}
		}
	}
	ready := want("READY=1", 10*time.Second)
	if !strings.Contains(ready, "STATUS=0 of 0 peers up") {
		t.Errorf("READY without a STATUS: %q", ready)
	}
	if !tapExists(a) {
		t.Error("READY=1 before the TAP exists")
	}
	want("WATCHDOG=1", 2*time.Second)
	want("WATCHDOG=1", 2*time.Second)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, a.v4+":"+port)
	waitPeerUp(t, upTimeout, cli)
	want("STATUS=1 of 1 peers up", 10*time.Second)
	srv.signal(syscall.SIGHUP) // systemctl reload
	if m := want("RELOADING=1", 5*time.Second); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	want("READY=1", 5*time.Second)
	srv.signal(syscall.SIGTERM)
	want("STOPPING=1", 5*time.Second)
	if !srv.wait(5*time.Second) || srv.exitCode() != 0 {
		t.Errorf("cab after SIGTERM: %s", srv.state())
	}
}

// TestSystemdUnit: systemd-analyze verify accepts the unit file.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not installed (apt-get install systemd)")
		}
		t.Skip("SKIPPED: systemd-analyze not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	unit, err := os.ReadFile("../systemd/cab@.service")
	if err != nil {
		t.Fatal(err)
	}
	// The unit runs /usr/local/bin/cab; verify checks that it exists.
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/cab", cabBin)
	if err := os.WriteFile(filepath.Join(dir, "cab@.service"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", filepath.Join(dir, "cab@.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestMakeInstall: make install puts the binary, the unit and an example
// into DESTDIR, with private modes for /etc/cab.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	if out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest).CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/cab":               0o755,
		"etc/systemd/system/cab@.service": 0o644,
		"etc/cab":                         0o700 | os.ModeDir,
		"etc/cab/example.toml":            0o600,
		"etc/cab/site.psk":                0o600,
	} {
		st, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if st.Mode()&(os.ModePerm|os.ModeDir) != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	out, err := exec.Command(filepath.Join(dest, "usr/local/bin/cab"), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "cab ") {
		t.Errorf("installed cab --version: %q %v", out, err)
	}
	// The example runs as installed (as cab@example would run it), and a
	// second make install keeps the key.
	psk, _ := os.ReadFile(filepath.Join(dest, "etc/cab/site.psk"))
	if out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest).CombinedOutput(); err != nil {
		t.Fatalf("make install again: %v\n%s", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dest, "etc/cab/site.psk")); string(again) != string(psk) || len(psk) == 0 {
		t.Errorf("a second make install changed or lost site.psk")
	}
	ex, err := os.ReadFile(filepath.Join(dest, "etc/cab/example.toml"))
	if err != nil || !strings.Contains(string(ex), `psk = "/etc/cab/site.psk"`) {
		t.Fatalf("example.toml does not name /etc/cab/site.psk: %v\n%s", err, ex)
	}
	s := newNetns(t, "i")
	file := s.path("example.toml")
	writeFile(t, file, strings.ReplaceAll(string(ex), "/etc/cab/", filepath.Join(dest, "etc/cab")+"/"))
	p := s.cab(t, "run", "-f", file)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), `msg="cable up"`) || p.exited() }) || p.exited() {
		t.Errorf("the installed example.toml does not run: %s\n%s", p.state(), p.stderr.String())
	}
}

// TestConfigFiles: a server and a client configured by files alone (-f;
// the server through cab run, as cab@.service runs it); ping crosses, and the client names its
// server as the file says.
func TestConfigFiles(t *testing.T) {
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	srvFile, cliFile := a.path("server.toml"), b.path("client.toml")
	writeFile(t, srvFile, fmt.Sprintf("role = \"server\"\nlocal = %q\nlisten_port = %s\npsk = %q\ntransport = [\"udp\", \"tcp\"]\n", "tap:"+tapDev, port, psk))
	writeFile(t, cliFile, fmt.Sprintf("local = %q\npsk = %q\nkeepalive = \"10s\"\n\n[[peer]]\nname = \"hq\"\nendpoint = %q\n",
		"tap:"+tapDev, psk, a.v4+":"+port))
	srv := a.cab(t, "run", "-f", srvFile) // as cab@.service runs it
	cli := b.cab(t, "client", "-f", cliFile)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	checkPing(t, a, b)
	if ps := statusOf(t, b); len(ps) != 1 || ps[0].Name != "hq" || !ps[0].Up {
		t.Errorf("client status %+v, want its server named hq, up", ps)
	}
}

// TestDemo: make demo's script runs as the README says (two namespaces, a
// ping across), and on a machine without ping it says what to install
// instead of failing half-way; make demo installs what the script needs.
func TestDemo(t *testing.T) {
	needRoot(t)
	out, err := exec.Command("bash", "../test/demo.sh", cabBin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "=== done") || !strings.Contains(string(out), "peer up") {
		t.Errorf("demo.sh: %v\n%s", err, out)
	}
	// A PATH with all the demo uses but ping.
	bin := t.TempDir()
	for _, c := range []string{"ip", "id", "mktemp", "seq", "sleep", "kill", "cat", "grep", "sed", "ls", "rm", "dirname", "basename", "bash"} {
		p, err := exec.LookPath(c)
		if err != nil {
			continue // a shell builtin
		}
		os.Symlink(p, filepath.Join(bin, c))
	}
	cmd := exec.Command(filepath.Join(bin, "bash"), "../test/demo.sh", cabBin)
	cmd.Env = append(os.Environ(), "PATH="+bin)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "demo: ping is missing: apt-get install iproute2 iputils-ping") {
		t.Errorf("demo.sh without ping: %v, want a clear error:\n%s", err, out)
	}
	out, err = exec.Command("make", "-C", "..", "-n", "demo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "iputils-ping") || !strings.Contains(string(out), "command -v") {
		t.Errorf("make -n demo does not install what the demo needs: %v\n%s", err, out)
	}
}
