package cab

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cab/crypto"
)

// checked reads the file at path and checks it for role, as the cab
// command does with no flags.
func checked(path, role string) (*Settings, error) {
	s, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	return s, s.Check(role)
}

// TestConfigExamples parses and checks every file in configs/, as the
// role it names.
func TestConfigExamples(t *testing.T) {
	files, err := filepath.Glob("configs/*.toml")
	if err != nil || len(files) < 6 {
		t.Fatalf("configs/: %v, %d files", err, len(files))
	}
	for _, f := range files {
		s, err := ParseFile(f)
		if err != nil || s.Role == "" {
			t.Errorf("%s: %v, role %q", f, err, s.Role)
			continue
		}
		if err := s.Check(s.Role); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if s.Local == "" || (s.Role == "client" && len(s.Servers) != 1) {
			t.Errorf("%s: local %q, server address %q", f, s.Local, s.Servers)
		}
	}
}

// TestConfigFile: values land in the settings, and every mistake names
// file:line and the fix.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const key = "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs="
	good := write("good.toml", `# a client
local = "tap:x1"
keepalive = "10s"
transport = ["udp", "tcp"]
udp_gso = "off"

[[peer]]
name = "hq"
public_key = "`+key+`"
endpoint = "192.0.2.1:6666"
`)
	s, err := checked(good, "client")
	if err != nil {
		t.Fatal(err)
	}
	if s.Local != "tap:x1" || s.Keepalive.String() != "10s" || s.Transport != "udp,tcp" || s.UDPGSO != "off" ||
		s.ServerKey != key || s.serverName != "hq" || len(s.Servers) != 1 || s.Servers[0] != "192.0.2.1:6666" {
		t.Errorf("settings %+v", s)
	}

	// A client with two endpoints: tried in order.
	two := write("two.toml", "local = \"tap:x\"\npsk = \"/k\"\n[[peer]]\nendpoints = [\"192.0.2.1:6666\", \"198.51.100.1:6666\"]\n")
	if s, err := checked(two, "client"); err != nil || len(s.Servers) != 2 || s.Servers[1] != "198.51.100.1:6666" {
		t.Errorf("two endpoints: %v", err)
	}
	// A client's [[peer]] transport wins over the top-level one.
	tr := write("tr.toml", "transport = \"udp\"\npsk = \"/k\"\n[[peer]]\nendpoint = \"192.0.2.1\"\ntransport = [\"tcp\", \"udp\"]\n")
	if s, err := checked(tr, "client"); err != nil || s.Transport != "tcp,udp" {
		t.Errorf("peer transport: %v", err)
	}

	// A server's peer with its own settings.
	hub := write("hub.toml", `[[peer]]
name = "branch"
public_key = "`+key+`"
psk = "/nonexistent/branch.psk"
keepalive = "5s"
allowed_macs = ["02:00:5e:10:00:01", "02:00:5e:10:00:02"]
allowed_vlans = [0, 10]
`)
	s, err = checked(hub, "server")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Peers) != 1 || s.Peers[0].Keepalive.String() != "5s" || len(s.Peers[0].AllowedMACs) != 2 ||
		len(s.Peers[0].AllowedVLANs) != 2 || s.Peers[0].AllowedVLANs[1] != 10 {
		t.Errorf("peers %+v", s.Peers)
	}
	if _, err := s.peerConfigs(); err == nil || !strings.Contains(err.Error(), "hub.toml:4: psk:") {
		t.Errorf("a missing peer PSK file: %v, want hub.toml:4", err)
	}

	for _, c := range []struct {
		role string
		text string
		want string
	}{
		{"client", "local = \"tap:x\"\nkeepalive = 10\n", "bad.toml:2: keepalive: want a duration in quotes"},
		{"client", "isolatte = true\n", "bad.toml:1: unknown key \"isolatte\""},
		{"server", "\n\nisolatte = true\n", "(did you mean isolate?)"},
		{"client", "psk = \"/k\"\nisolate = true\n", "bad.toml:2: isolate is a server's setting, and this is a client"},
		{"server", "server_key = \"" + key + "\"\n", "bad.toml:1: server_key is a client's setting"},
		{"server", "role = \"client\"\n", "bad.toml:1: role = \"client\", but this is cab server"},
		{"server", "role = \"hub\"\n", "bad.toml:1: role = hub: use role = \"server\" or role = \"client\""},
		{"server", "isolate = \"yes\"\n", "bad.toml:1: isolate: want true or false"},
		{"server", "listen_port = \"6666\"\n", `bad.toml:1: listen_port: want a whole number without quotes: "6666" is a quoted string; write listen_port = 6666`},
		{"server", "listen_port = 6.5\n", "bad.toml:1: listen_port: want a whole number, not 6.5"},
		{"server", "isolate = \"true\"\n", `bad.toml:1: isolate: want true or false without quotes: "true" is a quoted string`},
		{"server", "keepalive = \"ten seconds\"\n", `bad.toml:1: keepalive: "ten seconds" is not a duration: write it like "25s"`},
		{"server", "dead_after = \"50ms\"\n", "bad.toml:1: dead_after (--dead-after) 50ms: use"},
		{"server", "isolate = true\ndead_after = \"1h\"\n", "bad.toml:2: dead_after (--dead-after) 1h0m0s: use"},
		{"server", "local = \"tap:x,carrier=sometimes\"\n", "bad.toml:1: local (-s) tap:x,carrier=sometimes:"},
		{"server", "local = \"tap:x\"\nlocal = \"tap:y\"\n", "bad.toml:2:"},
		{"server", "psk = \n", "bad.toml:1:"},
		{"server", "f = \"x.toml\"\n", "bad.toml:1: unknown key \"f\""},
		{"server", "[[peer]]\nname = \"a\"\n", "bad.toml:1: [[peer]] \"a\" has no public_key"},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\nendpoint = \"x:1\"\n", "bad.toml:3: endpoint is for a client's [[peer]]"},
		{"server", "[[peer]]\npublic_key = \"nope\"\n", "bad.toml:2: public_key:"},
		{"server", "[[peer]]\npublic_key = \"" + highBitKey(t, key) + "\"\n", "bad.toml:2: public_key: public key is not canonical"},
		{"client", "[[peer]]\npublic_key = \"…\"\nendpoint = \"a:1\"\n", "bad.toml:2: public_key:"},
		{"server", "[[peer]]\npublic_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n", "bad.toml:2: public_key is all zeros, a placeholder"},
		{"client", "[[peer]]\nendpoint = \"a:1\"\n", "bad.toml:1: [[peer]] \"\" has no public_key"},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\nallowed = 1\n", "bad.toml:3: unknown key \"allowed\" in [[peer]]"},
		{"client", "[[peer]]\npublic_key = \"" + key + "\"\nendpoint = \"a:1\"\n[[peer]]\npublic_key = \"" + key + "\"\n", "bad.toml:4: a client has one [[peer]]"},
		{"client", "[[peer]]\npublic_key = \"" + key + "\"\n", "bad.toml:1: the server's [[peer]] has no endpoint"},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\nallowed_macs = [\"02:00:00:00:00:01\", \"nope\"]\n", `bad.toml:3: allowed_macs: "nope" is not a MAC address`},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\nallowed_vlans = [1, 5000]\n", "bad.toml:3: allowed_vlans: want VLAN numbers from 0 (untagged) to 4094"},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\ntransport = \"tcp\"\n", "bad.toml:3: transport in a server's [[peer]]"},
		{"server", "[[peer]]\npublic_key = \"" + key + "\"\nkeepalive = 5\n", "bad.toml:3: keepalive: want a string in quotes"},
		{"server", "peer = 3\n", "bad.toml:1: peer must be [[peer]] tables"},
		{"client", "psk = \"/k\"\nflood_budget = 100\n", "bad.toml:2: flood_budget is a server's setting"},
		{"server", "isolate = true\nflood_rate = -5\n", "bad.toml:2: flood_rate (--flood-rate) -5"},
		{"server", "flood_budget = -1\n", "bad.toml:1: flood_rate (--flood-rate) 2000, flood_budget (--flood-budget) -1: use"},
	} {
		p := write("bad.toml", c.text)
		_, err := checked(p, c.role)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: %v, want %q", c.role, c.text, err, c.want)
		}
	}
	if _, err := ParseFile(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestFloodSettings: flood_rate is a client's setting too; the flood
// budget is a server's alone (a client's copies are its frames); 0 means
// no limit.
func TestFloodSettings(t *testing.T) {
	for _, c := range []struct {
		role, text        string
		wantRate, wantBud int
	}{
		{"client", "psk = \"/k\"\n", DefaultFloodRate, -1},
		{"client", "psk = \"/k\"\nflood_rate = 100\n", 100, -1},
		{"client", "psk = \"/k\"\nflood_rate = 0\n", -1, -1},
		{"server", "", DefaultFloodRate, DefaultFloodBudget},
		{"server", "flood_rate = 300\nflood_budget = 7000\n", 300, 7000},
		{"server", "flood_budget = 0\n", DefaultFloodRate, -1},
	} {
		s, err := Parse(strings.NewReader(c.text), "flood.toml")
		if err != nil {
			t.Fatal(err)
		}
		if c.role == "client" {
			s.Servers = []string{"192.0.2.1"}
		}
		if err := s.Check(c.role); err != nil {
			t.Fatalf("%s %q: %v", c.role, c.text, err)
		}
		s.PSK = ""
		cfg, err := s.config(nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.FloodRate != c.wantRate || cfg.FloodBudget != c.wantBud {
			t.Errorf("%s %q: flood rate %d, budget %d; want %d, %d", c.role, c.text, cfg.FloodRate, cfg.FloodBudget, c.wantRate, c.wantBud)
		}
	}
}

// FuzzParse: any file either configures or gives an error that names the
// file; never a panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"local = \"tap:x\"\n[[peer]]\npublic_key = \"JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=\"\nendpoint = \"a:1\"\n",
		"isolate = true\nkeepalive = \"1s\"\ntransport = [\"udp\"]\n",
		"[[peer]]\n[[peer]]\nname = 1\n", "a = [1, \"x\"]\n", "peer = 3\n", "[peer]\nname = \"x\"\n",
		"role = \"client\"\nserver_key = \"x\"\n",
	} {
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, text string, server bool) {
		role := map[bool]string{true: "server", false: "client"}[server]
		s, err := Parse(strings.NewReader(text), "fuzz.toml")
		if err == nil {
			err = s.Check(role)
		}
		if err != nil && !strings.Contains(err.Error(), "fuzz.toml") && !strings.HasPrefix(err.Error(), role+":") &&
			!strings.HasPrefix(err.Error(), "--") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}

// TestChangedSetting: every setting but the peers and the server's key
// needs a restart, named as in the file (and its flag where that is a
// letter).
func TestChangedSetting(t *testing.T) {
	a, b := DefaultSettings(), DefaultSettings()
	b.ListenPort = 1
	if got := changedSetting(a, b); got != "listen_port (-p)" {
		t.Errorf("changedSetting = %q", got)
	}
	b = DefaultSettings()
	b.ServerKey = "x"
	b.Peers = []PeerSettings{{Name: "x"}}
	if got := changedSetting(a, b); got != "" {
		t.Errorf("a new server key or peer is a reload, yet changedSetting = %q", got)
	}
	for _, st := range settingTable {
		b := DefaultSettings()
		switch p := st.ptr(b).(type) {
		case *string:
			*p += "x"
		case *int:
			*p++
		case *bool:
			*p = !*p
		default:
			continue
		}
		if got := changedSetting(a, b); got != st.describe() && st.key != "server_key" {
			t.Errorf("%s changed: changedSetting = %q", st.key, got)
		}
	}
}

// highBitKey returns the base64 key k with bit 255 set: the same X25519
// point in a form no cab makes.
func highBitKey(t *testing.T, k string) string {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		t.Fatal(err)
	}
	b[31] |= 0x80
	return base64.StdEncoding.EncodeToString(b)
}

// TestPeerTablesMeanOnlyThese: a server with [[peer]] tables and a global
// psk accepts only the tables' clients, unless allow_any_psk says any PSK
// holder is welcome too.
func TestPeerTablesMeanOnlyThese(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "site.psk")
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.CreateKeyFile(psk, k); err != nil {
		t.Fatal(err)
	}
	peerKey := mustKey(t).Public().String()
	for _, anyPSK := range []bool{false, true} {
		text := fmt.Sprintf("psk = %q\nallow_any_psk = %v\n[[peer]]\nname = \"a\"\npublic_key = %q\n", psk, anyPSK, peerKey)
		s, err := Parse(strings.NewReader(text), "hub.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Check("server"); err != nil {
			t.Fatal(err)
		}
		cfg, err := s.config(quiet)
		if err != nil {
			t.Fatal(err)
		}
		su := &Setup{s: s, log: quiet}
		if err := su.serverPeers(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.AllowAny != anyPSK || len(cfg.Peers) != 1 {
			t.Errorf("allow_any_psk = %v: AllowAny %v with %d peers", anyPSK, cfg.AllowAny, len(cfg.Peers))
		}
	}
}
