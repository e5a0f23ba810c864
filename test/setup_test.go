//go:build linux

package cabtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// failSetup runs cab in s's namespace and wants it to exit 1 at once with
// one error line on stderr that contains every word of want.
func failSetup(t *testing.T, s *site, want []string, args ...string) {
	t.Helper()
	p := s.cab(t, args...)
	if !p.wait(10 * time.Second) {
		t.Fatalf("%s still running after 10 s, want exit 1 (bad setup)", p.name)
	}
	if code := p.exitCode(); code != 1 {
		t.Errorf("%s: exit code %d, want 1", p.name, code)
	}
	stderr := strings.TrimSpace(p.stderr.String())
	t.Logf("stderr: %s", stderr)
	if stderr == "" || strings.Contains(stderr, "\n") {
		t.Errorf("%s: stderr is %q, want one error line", p.name, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("%s: stderr %q does not mention %q", p.name, stderr, w)
		}
	}
	if tapExists(s) {
		t.Errorf("%s: TAP %s left behind in %s", p.name, tapDev, s.ns)
	}
}

func TestBadSetup(t *testing.T) {
	t.Parallel()
	s := newNetns(t, "x")
	good := genkey(t, s.path("good.key"))

	t.Run("key readable by others", func(t *testing.T) {
		open := genkey(t, s.path("open.key"))
		if err := os.Chmod(open, 0o644); err != nil {
			t.Fatal(err)
		}
		failSetup(t, s, []string{"chmod"}, "server", "-p", "47001", "-s", "tap:"+tapDev, "--key", open)
	})
	t.Run("psk readable by others", func(t *testing.T) {
		open := genkey(t, s.path("open.psk"))
		if err := os.Chmod(open, 0o644); err != nil {
			t.Fatal(err)
		}
		failSetup(t, s, []string{"chmod"}, "server", "-p", "47002", "-s", "tap:"+tapDev, "--psk", open)
	})
	t.Run("port in use", func(t *testing.T) {
		const busy = 47003
		listenUDPIn(t, s.ns, busy)
		failSetup(t, s, []string{strconv.Itoa(busy)}, "server", "-p", strconv.Itoa(busy), "-s", "tap:"+tapDev, "--psk", good)
	})
	t.Run("missing key file", func(t *testing.T) {
		missing := s.path(filepath.Join("no-such-dir", "site.key"))
		failSetup(t, s, []string{missing}, "server", "-p", "47004", "-s", "tap:"+tapDev, "--key", missing)
	})
	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		// cab run by an unprivileged user (nobody) cannot make a TAP and
		// must say what to do about it.
		bin := publicCopy(t)
		dir := filepath.Dir(bin)
		psk := filepath.Join(dir, "nobody.psk")
		key, _ := os.ReadFile(good)
		if err := os.WriteFile(psk, key, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dir, psk} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		p := start(t, s.ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin,
			"server", "-p", "47005", "-s", "tap:"+tapDev, "--psk", psk, "--state-dir", filepath.Join(dir, "state"), "--name", s.ns+"-np")
		if !p.wait(10 * time.Second) {
			t.Fatal("unprivileged cab still running after 10 s")
		}
		stderr := strings.TrimSpace(p.stderr.String())
		if p.exitCode() != 1 || !strings.Contains(stderr, "CAP_NET_ADMIN") || strings.Contains(stderr, "\n") {
			t.Fatalf("exit %d, stderr %q; want 1 and one line naming CAP_NET_ADMIN", p.exitCode(), stderr)
		}
		t.Logf("stderr: %s", stderr)
	})
	t.Run("key file is a directory", func(t *testing.T) {
		failSetup(t, s, nil, "client", "-s", "tap:"+tapDev, "--psk", s.dir, "198.51.100.1:"+port)
	})
}

// keyRE matches a base64 32-byte key.
var keyRE = regexp.MustCompile(`[A-Za-z0-9+/]{43}=`)

func TestZeroConfig(t *testing.T) {
	t.Parallel()
	s := newNetns(t, "z")
	state := s.path("state") // the --state-dir that site.cab passes; not there yet

	// serverKey starts a server with no key, PSK or allow file, and returns
	// the public key of the key file it keeps in the state directory, once it
	// has printed that key.
	serverKey := func() string {
		t.Helper()
		p := s.cab(t, "server", "-p", port)
		if !waitFor(10*time.Second, func() bool { return keyRE.MatchString(p.output()) || p.exited() }) || p.exited() {
			t.Fatalf("%s printed no key within 10 s (%s)", p.name, p.state())
		}
		keys, err := filepath.Glob(filepath.Join(state, "*.key"))
		if err != nil || len(keys) != 1 {
			t.Fatalf("state directory %s holds key files %q (%v), want one", state, keys, err)
		}
		st, err := os.Stat(keys[0])
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", keys[0], st.Mode().Perm())
		}
		pub := pubkey(t, keys[0])
		if !strings.Contains(p.output(), pub) {
			t.Fatalf("%s did not print %s's public key %s", p.name, keys[0], pub)
		}
		p.signal(syscall.SIGTERM)
		if !p.wait(5*time.Second) || p.exitCode() != 0 {
			t.Fatalf("%s: no clean exit after SIGTERM (%s)", p.name, p.state())
		}
		return pub
	}
	first := serverKey()
	if again := serverKey(); again != first {
		t.Errorf("after a restart the server printed key %s, want the same key %s", again, first)
	}
}
