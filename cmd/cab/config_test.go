package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigExamples parses and checks every file in configs/, as the
// role it names.
func TestConfigExamples(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.toml")
	if err != nil || len(files) < 6 {
		t.Fatalf("configs/: %v, %d files", err, len(files))
	}
	for _, f := range files {
		role, _, err := fileRole(f)
		if err != nil || role == "" {
			t.Errorf("%s: role %q, %v", f, role, err)
			continue
		}
		server := role == "server"
		o, pos, err := parseFlags([]string{"-f", f}, server, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if o.spec == "" || (!server && len(pos) < 1) {
			t.Errorf("%s: local %q, server address %q", f, o.spec, pos)
		}
	}
}

// TestConfigFile: values land in the options, the command line wins, and
// every mistake names file:line and the fix.
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
	o, pos, err := parseFlags([]string{"-f", good, "-s", "tap:cmdline"}, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.spec != "tap:cmdline" || o.keepalive.String() != "10s" || o.transports != "udp,tcp" || o.udpGSO != "off" ||
		o.serverKey != key || o.serverName != "hq" || len(pos) != 1 || pos[0] != "192.0.2.1:6666" {
		t.Errorf("options %+v, pos %q", o, pos)
	}

	// A client with two endpoints: tried in order.
	two := write("two.toml", "local = \"tap:x\"\npsk = \"/k\"\n[[peer]]\nendpoints = [\"192.0.2.1:6666\", \"198.51.100.1:6666\"]\n")
	if _, pos, err := parseFlags([]string{"-f", two}, false, &bytes.Buffer{}); err != nil || len(pos) != 2 || pos[1] != "198.51.100.1:6666" {
		t.Errorf("two endpoints: %q %v", pos, err)
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
	o, _, err = parseFlags([]string{"-f", hub}, true, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.peers) != 1 || o.peers[0].Keepalive.String() != "5s" || len(o.peers[0].AllowedMACs) != 2 ||
		len(o.peers[0].AllowedVLANs) != 2 || o.peers[0].AllowedVLANs[1] != 10 {
		t.Errorf("peers %+v", o.peers)
	}
	if err := o.loadPeerPSKs(); err == nil || !strings.Contains(err.Error(), "hub.toml:4: psk:") {
		t.Errorf("a missing peer PSK file: %v, want hub.toml:4", err)
	}

	for _, c := range []struct {
		server bool
		text   string
		want   string
	}{
		{false, "local = \"tap:x\"\nkeepalive = 10\n", "bad.toml:2: keepalive: want a duration in quotes"},
		{false, "isolatte = true\n", "bad.toml:1: unknown key \"isolatte\""},
		{true, "\n\nisolatte = true\n", "(did you mean isolate?)"},
		{true, "isolate = \"yes\"\n", "bad.toml:1: isolate: want true or false"},
		{true, "listen_port = \"6666\"\n", "bad.toml:1: listen_port: want a whole number"},
		{true, "keepalive = \"ten seconds\"\n", `bad.toml:1: keepalive: "ten seconds" is not a duration: write it like "25s"`},
		{true, "local = \"tap:x\"\nlocal = \"tap:y\"\n", "bad.toml:2:"},
		{true, "psk = \n", "bad.toml:1:"},
		{true, "[[peer]]\nname = \"a\"\n", "bad.toml:1: [[peer]] \"a\" has no public_key"},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\nendpoint = \"x:1\"\n", "bad.toml:3: endpoint is for a client's [[peer]]"},
		{true, "[[peer]]\npublic_key = \"nope\"\n", "bad.toml:2: public_key:"},
		{true, "[[peer]]\npublic_key = \"" + highBitKey(t, key) + "\"\n", "bad.toml:2: public_key: public key is not canonical"},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\nallowed = 1\n", "bad.toml:3: unknown key \"allowed\" in [[peer]]"},
		{false, "[[peer]]\npublic_key = \"" + key + "\"\nendpoint = \"a:1\"\n[[peer]]\npublic_key = \"" + key + "\"\n", "bad.toml:4: a client has one [[peer]]"},
		{false, "[[peer]]\npublic_key = \"" + key + "\"\n", "bad.toml:1: the server's [[peer]] has no endpoint"},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\nallowed_macs = [\"02:00:00:00:00:01\", \"nope\"]\n", `bad.toml:3: allowed_macs: "nope" is not a MAC address`},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\nallowed_vlans = [1, 5000]\n", "bad.toml:3: allowed_vlans: want VLAN numbers from 0 (untagged) to 4094"},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\ntransport = \"tcp\"\n", "bad.toml:3: transport in a server's [[peer]]"},
		{true, "[[peer]]\npublic_key = \"" + key + "\"\nkeepalive = 5\n", "bad.toml:3: keepalive: want a string in quotes"},
		{true, "isolate = true\ndead_after = \"100ms\"\n", "bad.toml:2: dead_after: 100ms: use 300ms to 1m0s, or 0 for the default detection"},
		{false, "dead_after = \"2m\"\n", "bad.toml:1: dead_after: 2m0s: use 300ms to 1m0s"},
		{false, "dead_after = 1\n", "bad.toml:1: dead_after: want a duration in quotes"},
		{true, "\nlocal = \"tap:x,carrier=off\"\n", "bad.toml:2: local: tap:x,carrier=off: carrier=off: use carrier=follow"},
	} {
		p := write("bad.toml", c.text)
		_, _, err := parseFlags([]string{"-f", p}, c.server, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.text, err, c.want)
		}
	}
	// The same mistakes on the command line name the flag.
	for args, want := range map[string]string{
		"--dead-after 10ms":           "--dead-after: 10ms: use 300ms to 1m0s",
		"-s tap:x,carrier=maybe":      "-s: tap:x,carrier=maybe: carrier=maybe: use carrier=follow",
		"-f " + good + " -s tap:x,c=": "-s: tap:x,c=: option",
	} {
		if _, _, err := parseFlags(strings.Fields(args), false, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	fast := write("fast.toml", "local = \"tap:x,bridge=br0,carrier=follow\"\ndead_after = \"1s\"\n")
	if o, _, err := parseFlags([]string{"-f", fast}, true, &bytes.Buffer{}); err != nil || o.deadAfter != time.Second {
		t.Errorf("dead_after = \"1s\": %v, %v", o, err)
	}
	if _, _, err := parseFlags([]string{"-f", filepath.Join(dir, "missing.toml")}, true, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
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

// FuzzConfigFile: any file either configures or gives an error that names
// the file; never a panic.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"local = \"tap:x\"\n[[peer]]\npublic_key = \"JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs=\"\nendpoint = \"a:1\"\n",
		"isolate = true\nkeepalive = \"1s\"\ntransport = [\"udp\"]\n",
		"[[peer]]\n[[peer]]\nname = 1\n", "a = [1, \"x\"]\n", "peer = 3\n", "[peer]\nname = \"x\"\n",
	} {
		f.Add(seed, false)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string, server bool) {
		p := filepath.Join(dir, "fuzz.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := parseFlags([]string{"-f", p}, server, &bytes.Buffer{})
		if err != nil && !strings.Contains(err.Error(), "fuzz.toml") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}

// TestSettingNames: every option has a name for reload messages, so a new
// flag cannot slip through as a Go field name.
func TestSettingNames(t *testing.T) {
	v := reflect.TypeOf(options{})
	for i := range v.NumField() {
		name := v.Field(i).Name
		switch name {
		case "peers", "serverKey", "serverName", "serverPeer", "setByFlag", "configFile", "peerPSKs", "quicResetKey":
			continue
		}
		if _, ok := settingNames[name]; !ok {
			t.Errorf("option %s has no entry in settingNames", name)
		}
	}
	a, b := &options{port: 1}, &options{port: 2}
	if got := changedField(a, b); got != "listen_port (-p)" {
		t.Errorf("changedField = %q", got)
	}
	if got := changedField(a, &options{port: 1, serverKey: "x"}); got != "" {
		t.Errorf("a new server key is a reload, yet changedField = %q", got)
	}
}
