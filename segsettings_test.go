package cab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSegmentFlag: -s SPEC is the local port, -s NAME=SPEC a named
// segment with its options; with named segments, the cable has a local
// port only when -s SPEC (or local) gave one.
func TestSegmentFlag(t *testing.T) {
	s := DefaultSettings()
	for _, v := range []string{"blue=tap:cab-blue,bridge=br-blue,psk=/etc/cab/blue.psk", "red=vde:/run/vde/red,isolate", "blue=tap:b2"} {
		if err := s.SetLocal(v); err != nil {
			t.Fatal(err)
		}
	}
	if s.Local != "tap:cab0" || s.hasDefaultPort() {
		t.Fatalf("local %q, default port %v: want none besides the segments", s.Local, s.hasDefaultPort())
	}
	if len(s.Segments) != 2 || s.Segments[0].Name != "red" || s.Segments[0].Local != "vde:/run/vde/red" || !s.Segments[0].Isolate ||
		s.Segments[1].Name != "blue" || s.Segments[1].Local != "tap:b2" || s.Segments[1].PSK != "" {
		t.Fatalf("segments %+v", s.Segments)
	}
	s2 := DefaultSettings()
	s2.SetLocal("blue=tap:x,bridge=br0,psk=/k")
	if g := s2.Segments[0]; g.Local != "tap:x,bridge=br0" || g.PSK != "/k" {
		t.Fatalf("options: %+v", g)
	}
	if d := s.PortDescription(); d != "red=vde:/run/vde/red blue=tap:b2" {
		t.Errorf("the log says the ports are %q", d)
	}
	if err := s.SetLocal("tap:cab9,bridge=br0"); err != nil || s.Local != "tap:cab9,bridge=br0" || !s.hasDefaultPort() {
		t.Fatalf("-s SPEC after segments: %v, %q, %v", err, s.Local, s.hasDefaultPort())
	}
	for v, want := range map[string]string{
		"bl ue=tap:x":   "use letters, digits",
		"default=tap:x": "the name status gives the local port",
		"blue=psk=/k":   "give the segment's port",
	} {
		if err := DefaultSettings().SetLocal(v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-s %s: %v, want %q", v, err, want)
		}
	}
	if !DefaultSettings().hasDefaultPort() {
		t.Error("a cable without segments has no local port")
	}
}

// TestSegmentTables: [[segment]] tables and segments in [[peer]] tables,
// and every mistake named by file and line with its fix.
func TestSegmentTables(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := "qzcnwQu+6gDxsvDfMbUoVE2mM0cXhT32hy3WqmUFJ0s="
	good := `role = "server"
local = "tap:cab0"

[[segment]]
name = "blue"
local = "tap:cab-blue"
isolate = true
max_macs = 10
flood_rate = 100
allowed_vlans = [0, 100]

[[peer]]
public_key = "` + key + `"
segments = ["blue"]
`
	s, err := checked(write(good), "server")
	if err != nil {
		t.Fatal(err)
	}
	if g := s.Segments[0]; g.Name != "blue" || g.Local != "tap:cab-blue" || !g.Isolate || g.MaxMACs != 10 || g.FloodRate != 100 || len(g.AllowedVLANs) != 2 {
		t.Fatalf("segment %+v", g)
	}
	if !s.hasDefaultPort() || len(s.Peers[0].Segments) != 1 {
		t.Fatalf("default port %v, peer segments %v", s.hasDefaultPort(), s.Peers[0].Segments)
	}
	// Each text follows a line role = "server": line numbers count it.
	bad := map[string]string{
		"[[segment]]\nname = \"blue\"\nlocale = \"tap:x\"\n":                                           `c.toml:4: unknown key "locale" in [[segment]] (did you mean local?)`,
		"[[segment]]\nname = \"blue\"\n":                                                               `c.toml:2: segment "blue" has no port: add local`,
		"[[segment]]\nname = \"b l\"\nlocal = \"tap:x\"\n":                                             `c.toml:3: segment name "b l"`,
		"[[segment]]\nname = \"b\"\nlocal = \"tap:x\"\n[[segment]]\nname = \"b\"\nlocal = \"tap:y\"\n": `c.toml:6: segment "b" given twice`,
		"[[peer]]\npublic_key = \"" + key + "\"\nsegments = [\"red\"]\n":                               `c.toml:4: [[peer]] "": no segment "red"`,
		"[[segment]]\nname = \"b\"\nlocal = \"tap:x\"\nmax_macs = \"5\"\n":                             `c.toml:5: max_macs: want a whole number without quotes`,
		"[[segment]]\nname = \"b\"\nlocal = \"tap:t,vlan=100\"\nallowed_vlans = [100]\n":               `c.toml:5: segment "b": its port is VLAN 100 of the TAP t, whose frames are untagged inside the cable, and allowed_vlans lets in no untagged frame: add 0 to allowed_vlans`,
	}
	for text, want := range bad {
		_, err := checked(write("role = \"server\"\n"+text), "server")
		want = strings.Replace(want, "c.toml:", filepath.Join(dir, "c.toml")+":", 1)
		if err == nil || !strings.Contains(err.Error(), strings.SplitN(want, ": ", 2)[1]) || !strings.Contains(err.Error(), lineOf(want)) {
			t.Errorf("%q: %v, want %s", text, err, want)
		}
	}
	s2 := DefaultSettings()
	s2.SetLocal("tap:cb")
	s2.SetLocal("blue=tap:cb,bridge=br0")
	if err := s2.Check("server"); err == nil || !strings.Contains(err.Error(), "the local port and segment blue are both the TAP cb") {
		t.Errorf("two ports on one TAP: %v", err)
	}
	many := DefaultSettings()
	for i := range maxJoins + 1 {
		many.SetLocal(fmt.Sprintf("s%d=tap:t%d", i, i))
	}
	many.Servers = []string{"192.0.2.1"}
	if err := many.Check("client"); err == nil || !strings.Contains(err.Error(), "a client joins at most 16 segments") {
		t.Errorf("17 segments on a client: %v", err)
	}
	s3 := DefaultSettings()
	s3.SetLocal("blue=tap:cb,vlan=10")
	s3.SetLocal("red=tap:cb,vlan=20")
	if err := s3.Check("server"); err != nil {
		t.Errorf("two VLANs of one TAP: %v", err)
	}
	client := "role = \"client\"\n[[peer]]\npublic_key = \"" + key + "\"\nendpoint = \"192.0.2.1\"\nsegments = [\"blue\"]\n"
	if _, err := checked(write(client), "client"); err == nil || !strings.Contains(err.Error(), "segments in a client's [[peer]]") {
		t.Errorf("segments in a client's [[peer]]: %v", err)
	}
}

// lineOf returns the "file:N:" prefix of an expected error.
func lineOf(want string) string {
	i := strings.Index(want, ".toml:")
	j := strings.Index(want[i+6:], ":")
	return want[i+6 : i+6+j+1]
}
