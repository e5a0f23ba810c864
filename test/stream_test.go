//go:build linux

package cabtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab/crypto"
)

// The stream transports of issue 7 in network namespaces: TCP, the SSH
// pipe through a real sshd (with a forced-command key), and the automatic
// fallback from UDP to TCP when UDP is dropped in the underlay.

// TestTCPTransport: a server listening on UDP and TCP, a client that dials
// TCP only; ping and a TCP transfer cross, and status says tcp.
func TestTCPTransport(t *testing.T) {
	a, b := newPair(t)
	pskPairArgs(t, a, b, a.v4+":"+port, []string{"--transport", "udp,tcp"}, []string{"--transport", "tcp"})
	checkPing(t, a, b)
	checkTCP(t, a, b)
	for _, s := range []*site{a, b} {
		if ps := statusOf(t, s); len(ps) != 1 || ps[0].Transport != "tcp" {
			t.Errorf("%s: status %+v, want one peer over tcp", s.ns, ps)
		}
	}
}

// sshSetup is an sshd started by a test in a site's namespace, and what a
// client needs to reach it.
type sshSetup struct {
	port    string
	command string // the ssh command line for cab's --ssh-command
	key     string // the client's private key file
	opts    []string
	sshd    *proc
}

// startSSHD starts sshd (Debian's openssh-server) in s's namespace on the
// underlay address, with a fresh host key and one authorised client key for
// root. With forced set, the key is restricted to `cab pipe` and nothing
// else (the recipe the README gives).
func startSSHD(t *testing.T, s *site, client *site, forced bool) *sshSetup {
	t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(sshd); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("sshd not installed (apt-get install openssh-server)")
		}
		t.Skip("SKIPPED: sshd not installed (apt-get install openssh-server)")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	dir := s.path("sshd")
	cdir := client.path("ssh")
	for _, d := range []string{dir, cdir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	hostKey, userKey := filepath.Join(dir, "host_ed25519"), filepath.Join(cdir, "id_ed25519")
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", userKey)
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(pub))
	if forced {
		line = fmt.Sprintf(`restrict,command="%s pipe --name %s" %s`, cabBin, s.ns, line)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	const sshPort = "2222"
	known := filepath.Join(cdir, "known_hosts")
	if err := os.WriteFile(known, []byte(fmt.Sprintf("[%s]:%s %s", s.v4, sshPort, hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sshd_config")
	conf := strings.Join([]string{
		"Port " + sshPort,
		"ListenAddress " + s.v4,
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authKeys,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"LogLevel DEBUG1", // says the cipher each direction uses
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -D: stay in the foreground, so start() owns the PID; -e: log to stderr.
	p := start(t, s.ns, sshd, "-D", "-e", "-f", cfg)
	if !waitFor(10*time.Second, func() bool {
		out, err := run(5*time.Second, "ip", "netns", "exec", s.ns, "ss", "-Hltn", "sport", "=", ":"+sshPort)
		return p.exited() || err == nil && strings.TrimSpace(out) != ""
	}) || p.exited() {
		t.Fatalf("sshd does not listen (%s): %s", p.state(), p.output())
	}
	opts := []string{"-i", userKey, "-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"}
	return &sshSetup{port: sshPort, key: userKey, opts: opts, command: "ssh " + strings.Join(opts, " "), sshd: p}
}

// TestSSHTransport: the cable through a real sshd, once with a plain key
// (the client names the remote command) and once with a forced-command key
// that can do nothing but `cab pipe`.
func TestSSHTransport(t *testing.T) {
	for _, forced := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain key", true: "forced command"}[forced], func(t *testing.T) {
			a, b := newPair(t)
			ssh := startSSHD(t, a, b, forced)
			psk := genkey(t, a.path("site.psk"))
			srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
			cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk,
				"--transport", "ssh://root@"+a.v4+":"+ssh.port,
				"--ssh-command", ssh.command,
				"--ssh-remote", cabBin+" pipe --name "+a.ns)
			setupTap(t, a, srv, overlayA)
			setupTap(t, b, cli, overlayB)
			waitPeerUp(t, 20*time.Second, srv, cli)
			checkPing(t, a, b)
			checkTCP(t, a, b)
			if ps := statusOf(t, b); len(ps) != 1 || ps[0].Transport != "ssh" {
				t.Errorf("client status %+v, want one peer over ssh", ps)
			}
			// On a CPU with AES instructions cab asks ssh for AES-GCM first.
			want := "client->server cipher: chacha20-poly1305@openssh.com" // OpenSSH's default
			if crypto.LocalCiphers()[0] == crypto.CipherAES256GCM {
				want = "client->server cipher: aes128-gcm@openssh.com"
			}
			if out := ssh.sshd.output(); !strings.Contains(out, want) {
				t.Errorf("sshd did not log %q:\n%s", want, out)
			}
			if forced {
				// The key runs cab pipe whatever it asks for: no shell.
				args := append([]string{"netns", "exec", b.ns, "ssh", "-T", "-p", ssh.port}, ssh.opts...)
				args = append(args, "root@"+a.v4, "echo shell-$((6*7))")
				out, _ := run(15*time.Second, "ip", args...)
				if strings.Contains(out, "shell-42") {
					t.Errorf("the forced-command key ran a shell command: %q", out)
				}
			}
		})
	}
}

// nft runs an nftables command in s's namespace.
func nft(t *testing.T, s *site, args ...string) {
	t.Helper()
	mustRun(t, "ip", append([]string{"netns", "exec", s.ns, "nft"}, args...)...)
}

// TestFallbackUDPBlocked: with --transport udp,tcp, a client whose UDP is
// dropped in the underlay moves to TCP within seconds, and returns to UDP
// when the rule goes; the pings lost in each switch are counted.
func TestFallbackUDPBlocked(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft not installed (apt-get install nftables)")
		}
		t.Skip("SKIPPED: nft not installed (apt-get install nftables)")
	}
	a, b := newPair(t)
	srv, cli := pskPairArgs(t, a, b, a.v4+":"+port, []string{"--transport", "udp,tcp"}, []string{"--transport", "udp,tcp"})
	checkPing(t, a, b)
	transport := func() string {
		if ps := statusOf(t, b); len(ps) == 1 && ps[0].Up {
			return ps[0].Transport
		}
		return ""
	}
	if tr := transport(); tr != "udp" {
		t.Fatalf("client starts on %q, want udp", tr)
	}

	// A continuous ping (5 per second) runs through both switches.
	pinger := start(t, b.ns, "ping", "-n", "-i", "0.2", "-W", "1", overlayA)

	nft(t, a, "add", "table", "inet", "cabtest")
	nft(t, a, "add", "chain", "inet", "cabtest", "in", "{ type filter hook input priority 0 ; }")
	nft(t, a, "add", "rule", "inet", "cabtest", "in", "udp", "dport", port, "drop")
	t0 := time.Now()
	if !waitFor(45*time.Second, func() bool { return transport() == "tcp" }) {
		t.Fatalf("no fallback to tcp within 45 s: %+v", statusOf(t, b))
	}
	toTCP := time.Since(t0)
	waitPing(t, 20*time.Second, b.ns, overlayA)
	if ps := statusOf(t, a); len(ps) != 1 || ps[0].MACs == 0 {
		t.Errorf("server after the fallback: %+v, want the one client with its MACs", ps)
	}

	nft(t, a, "delete", "table", "inet", "cabtest")
	t1 := time.Now()
	if !waitFor(45*time.Second, func() bool { return transport() == "udp" }) {
		t.Fatalf("no return to udp within 45 s: %+v", statusOf(t, b))
	}
	toUDP := time.Since(t1)
	time.Sleep(2 * time.Second)
	pinger.signal(2) // SIGINT: ping prints its summary
	pinger.wait(5 * time.Second)
	out := pinger.stdout.String()
	var sent, got int
	if i := strings.LastIndex(out, "packets transmitted"); i >= 0 {
		fmt.Sscanf(out[strings.LastIndex(out[:i], "\n")+1:], "%d packets transmitted, %d received", &sent, &got)
	}
	for _, l := range strings.Split(srv.stderr.String()+cli.stderr.String(), "\n") {
		if strings.Contains(l, "transport") || strings.Contains(l, "handshake") || strings.Contains(l, "peer") {
			t.Log(l)
		}
	}
	t.Logf("udp→tcp in %v, tcp→udp in %v; pings: %d sent, %d lost", toTCP.Round(100*time.Millisecond), toUDP.Round(100*time.Millisecond), sent, sent-got)
	if sent == 0 {
		t.Fatalf("no ping summary: %s", out)
	}
	// Lost: the pings of the fallback (the peer stops saying it hears us
	// within 3 s, 5 s of unanswered packets, one more handshake over UDP:
	// about 7 s at 5 per second), and few in the return.
	if lost := sent - got; lost > 60 {
		t.Errorf("%d of %d pings lost across both switches", lost, sent)
	}
}
