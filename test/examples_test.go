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
	text = regexp.MustCompile(`\b[a-z0-9-]+\.example\.net\b`).ReplaceAllString(text, server)
	if edit != nil {
		text = edit(text)
	}
	path := s.path(name)
	writeFile(t, path, text)
	return path
}

// pairSetup is what a pair of examples needs besides the two files: the
// processes' environments, edits of each file, more client flags.
type pairSetup struct {
	serverEnv, clientEnv   []string
	serverEdit, clientEdit func(string) string
	clientArgs             []string
}

// bridgeIn makes a Linux bridge br0 in s's namespace.
func bridgeIn(t *testing.T, s *site) {
	t.Helper()
	mustRun(t, "ip", "-n", s.ns, "link", "add", "br0", "type", "bridge")
	mustRun(t, "ip", "-n", s.ns, "link", "set", "br0", "up")
}

// TestConfigExamplePairs: every example in configs/ brings up a cable as
// shipped, with the one it pairs with (the README's pairing): only the
// deployment's own paths, keys and addresses are filled in, and the
// bridges and switches the examples name are made.
func TestConfigExamplePairs(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.toml")
	covered := map[string]bool{}
	serverBridge := func(t *testing.T, a, b *site) pairSetup { bridgeIn(t, a); return pairSetup{} }
	bothBridges := func(t *testing.T, a, b *site) pairSetup { bridgeIn(t, a); bridgeIn(t, b); return pairSetup{} }
	clientOVS := func(t *testing.T, a, b *site) pairSetup {
		db := startOVS(t, b, overlayB)
		return pairSetup{clientEnv: []string{"OVS_DB_SOCK=" + db}, clientEdit: func(s string) string { return strings.ReplaceAll(s, "ovs=br0", "ovs=brx") }}
	}
	pairs := []struct {
		server, client string
		setup          func(t *testing.T, a, b *site) pairSetup
	}{
		{"two-site-server.toml", "two-site-client.toml", nil},
		{"two-site-server.toml", "ssh-fallback.toml", nil},
		{"quic-server.toml", "quic-site.toml", nil},
		{"dns-tunnel-server.toml", "dns-tunnel.toml", nil},
		{"bridge.toml", "two-site-client.toml", serverBridge},
		{"vde.toml", "two-site-client.toml", func(t *testing.T, a, b *site) pairSetup {
			sw := startSwitch(t, a, "sw")
			return pairSetup{serverEdit: func(s string) string { return strings.ReplaceAll(s, "/run/vde/sw", sw.dir) }}
		}},
		{"hub.toml", "two-site-client.toml", func(t *testing.T, a, b *site) pairSetup {
			bridgeIn(t, a)
			// The client is branch-2, with a PSK of its own.
			ckey := genkey(t, b.path("client.key"))
			return pairSetup{serverEdit: func(s string) string {
				return strings.Replace(s, "imLI8xrFSHeVejrFEFyjvJ8XCXSGMlB4SplNle6VKis=", pubkey(t, ckey), 1)
			}, clientArgs: []string{"--key", ckey, "--server-key", pubkey(t, a.path("hub.key")), "--keepalive", "10s", a.v4 + ":7667"}}
		}},
		{"ovs.toml", "two-site-client.toml", func(t *testing.T, a, b *site) pairSetup {
			db := startOVS(t, a, overlayA)
			ckey := genkey(t, b.path("client.key"))
			writeFile(t, a.path("ovs-clients.txt"), pubkey(t, ckey)+" site-b\n")
			return pairSetup{serverEnv: []string{"OVS_DB_SOCK=" + db}, serverEdit: func(s string) string { return strings.ReplaceAll(s, "ovs=br-int", "ovs=brx") },
				clientArgs: []string{"--psk", "", "--key", ckey, "--server-key", pubkey(t, a.path("ovs.key"))}}
		}},
		{"bond-hub.toml", "bond-site-1.toml", serverBridge},
		{"bond-hub.toml", "bond-site-2.toml", serverBridge},
		{"rstp-hub.toml", "rstp-site-1.toml", clientOVS},
		{"rstp-hub.toml", "rstp-site-2.toml", clientOVS},
		{"stp-link-server.toml", "stp-link-client.toml", bothBridges},
		{"segments-server.toml", "segments-client.toml", func(t *testing.T, a, b *site) pairSetup {
			for _, s := range []*site{a, b} {
				for _, br := range []string{"br-blue", "br-red"} {
					mustRun(t, "ip", "-n", s.ns, "link", "add", br, "type", "bridge")
					mustRun(t, "ip", "-n", s.ns, "link", "set", br, "up")
				}
			}
			sw := startSwitch(t, a, "lab")
			ckey := genkey(t, b.path("branch-1.key"))
			return pairSetup{
				serverEdit: func(s string) string {
					s = strings.ReplaceAll(s, "/run/vde/lab", sw.dir)
					return strings.Replace(s, "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=", pubkey(t, ckey), 1)
				},
				clientEdit: func(s string) string {
					return strings.Replace(s, "3UPyxjTA1uxyWR5gXUnQThS1zUNv4GkbSpQ9V5UHVlE=", pubkey(t, a.path("hub.key")), 1)
				},
			}
		}},
	}
	for _, pr := range pairs {
		covered[pr.server], covered[pr.client] = true, true
		t.Run(strings.TrimSuffix(pr.server, ".toml")+"+"+strings.TrimSuffix(pr.client, ".toml"), func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			psk := genkey(t, a.path("site.psk"))
			switch pr.server {
			case "hub.toml", "ovs.toml":
				genkey(t, a.path(strings.TrimSuffix(pr.server, ".toml")+".key"))
			case "segments-server.toml":
				genkey(t, a.path("hub.key"))
			}
			var ps pairSetup
			if pr.setup != nil {
				ps = pr.setup(t, a, b)
			}
			sf := exampleFile(t, a, pr.server, psk, a.v4, ps.serverEdit)
			cf := exampleFile(t, b, pr.client, psk, a.v4, ps.clientEdit)
			srv := start(t, a.ns, "env", append(append(ps.serverEnv, cabBin), "run", "-f", sf, "--name", a.ns, "--state-dir", a.path("state"))...)
			cargs := append([]string{"run", "-f", cf}, ps.clientArgs...)
			cli := start(t, b.ns, "env", append(append(ps.clientEnv, cabBin), append(cargs, "--name", b.ns, "--state-dir", b.path("state"))...)...)
			waitPeerUp(t, 20*time.Second, srv, cli)
		})
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s is in no pair that this test brings up", f)
		}
	}
}
