//go:build linux

package cabtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// exampleFile copies configs/name into s's directory for a test: files
// under /etc/cab/ move into the directory (every *.psk is the pair's one
// PSK, every *.key a new key), the example hosts become server, and
// edit, when given, changes the rest. It returns the copy's path.
func exampleFile(t *testing.T, s *site, name, psk, server string, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`/etc/cab/[A-Za-z0-9_.-]+\.psk`).ReplaceAllString(string(b), psk)
	for _, k := range regexp.MustCompile(`/etc/cab/[A-Za-z0-9_.-]+\.key`).FindAllString(text, -1) {
		p := s.path(filepath.Base(k))
		if _, err := os.Stat(p); err != nil {
			genkey(t, p)
		}
		text = strings.ReplaceAll(text, k, p)
	}
	text = strings.ReplaceAll(text, "/etc/cab/", s.dir+"/")
	text = regexp.MustCompile(`\b[a-z]+\.example\.net\b`).ReplaceAllString(text, server)
	if edit != nil {
		text = edit(text)
	}
	path := s.path(name)
	writeFile(t, path, text)
	return path
}

// TestConfigExamplePairs: every example in configs/ brings up a cable as
// shipped, with the one it pairs with (the README's pairing): only the
// deployment's own paths, keys and addresses are filled in.
func TestConfigExamplePairs(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.toml")
	covered := map[string]bool{}
	pairs := []struct {
		server, client string
		setup          func(t *testing.T, a, b *site) (serverEnv []string, edit func(string) string, clientArgs []string)
	}{
		{"two-site-server.toml", "two-site-client.toml", nil},
		{"two-site-server.toml", "ssh-fallback.toml", nil},
		{"quic-server.toml", "quic-site.toml", nil},
		{"dns-tunnel-server.toml", "dns-tunnel.toml", nil},
		{"bridge.toml", "two-site-client.toml", func(t *testing.T, a, b *site) ([]string, func(string) string, []string) {
			mustRun(t, "ip", "-n", a.ns, "link", "add", "br0", "type", "bridge")
			mustRun(t, "ip", "-n", a.ns, "link", "set", "br0", "up")
			return nil, nil, nil
		}},
		{"vde.toml", "two-site-client.toml", func(t *testing.T, a, b *site) ([]string, func(string) string, []string) {
			sw := startSwitch(t, a, "sw")
			return nil, func(s string) string { return strings.ReplaceAll(s, "/run/vde/sw", sw.dir) }, nil
		}},
		{"hub.toml", "two-site-client.toml", func(t *testing.T, a, b *site) ([]string, func(string) string, []string) {
			mustRun(t, "ip", "-n", a.ns, "link", "add", "br0", "type", "bridge")
			mustRun(t, "ip", "-n", a.ns, "link", "set", "br0", "up")
			// The client is branch-2, with a PSK of its own.
			ckey := genkey(t, b.path("client.key"))
			return nil, func(s string) string {
					return strings.Replace(s, "imLI8xrFSHeVejrFEFyjvJ8XCXSGMlB4SplNle6VKis=", pubkey(t, ckey), 1)
				}, []string{"--key", ckey, "--server-key", pubkey(t, a.path("hub.key")), "--keepalive", "10s",
					a.v4 + ":7667"}
		}},
		{"ovs.toml", "two-site-client.toml", func(t *testing.T, a, b *site) ([]string, func(string) string, []string) {
			db := startOVS(t, a, overlayA)
			ckey := genkey(t, b.path("client.key"))
			writeFile(t, a.path("ovs-clients.txt"), pubkey(t, ckey)+" site-b\n")
			return []string{"OVS_DB_SOCK=" + db}, func(s string) string { return strings.ReplaceAll(s, "ovs=br-int", "ovs=brx") },
				[]string{"--psk", "", "--key", ckey, "--server-key", pubkey(t, a.path("ovs.key"))}
		}},
	}
	for _, pr := range pairs {
		covered[pr.server], covered[pr.client] = true, true
		t.Run(strings.TrimSuffix(pr.server, ".toml")+"+"+strings.TrimSuffix(pr.client, ".toml"), func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			psk := genkey(t, a.path("site.psk"))
			if pr.server == "hub.toml" || pr.server == "ovs.toml" {
				genkey(t, a.path(strings.TrimSuffix(pr.server, ".toml")+".key"))
			}
			var env, clientArgs []string
			var edit func(string) string
			if pr.setup != nil {
				env, edit, clientArgs = pr.setup(t, a, b)
			}
			sf := exampleFile(t, a, pr.server, psk, a.v4, edit)
			cf := exampleFile(t, b, pr.client, psk, a.v4, nil)
			args := []string{"run", "-f", sf, "--name", a.ns, "--state-dir", a.path("state")}
			srv := start(t, a.ns, "env", append(append(env, cabBin), args...)...)
			cli := b.cab(t, append([]string{"run", "-f", cf}, clientArgs...)...)
			waitPeerUp(t, 20*time.Second, srv, cli)
		})
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s is in no pair that this test brings up", f)
		}
	}
}
