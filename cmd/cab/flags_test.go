package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"cab"
)

// TestFlagsOverFile: the file's values land in the settings, and the
// flags given on the command line win over them.
func TestFlagsOverFile(t *testing.T) {
	const key = "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs="
	path := filepath.Join(t.TempDir(), "c.toml")
	text := "local = \"tap:x1\"\nkeepalive = \"10s\"\ntransport = [\"udp\", \"tcp\"]\n\n[[peer]]\nname = \"hq\"\npublic_key = \"" + key + "\"\nendpoint = \"192.0.2.1:6666\"\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := parseFlags([]string{"-f", path, "-s", "tap:cmdline", "--transport", "tcp"}, false, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Local != "tap:cmdline" || s.Keepalive != 10*time.Second || s.Transport != "tcp" || s.ServerKey != key ||
		len(s.Servers) != 1 || s.Servers[0] != "192.0.2.1:6666" {
		t.Errorf("settings %+v", s)
	}
	// An address on the command line wins over the file's endpoint.
	if s, err := parseFlags([]string{"-f", path, "198.51.100.1"}, false, io.Discard); err != nil || !slices.Equal(s.Servers, []string{"198.51.100.1"}) {
		t.Errorf("servers %v, %v", s.Servers, err)
	}
	// A file's mistake comes back with its line.
	if _, err := parseFlags([]string{"-f", path}, true, io.Discard); err == nil || !strings.Contains(err.Error(), "c.toml:8: endpoint is for a client's") {
		t.Errorf("a client's file as a server: %v", err)
	}
}

// TestFlagsAreKeys: every flag of server and client sets the same setting
// as its key in a configuration file (its name with underscores; -s is
// local, -p listen_port, -l listen, -v verbose), and every key of the role
// has a flag.
func TestFlagsAreKeys(t *testing.T) {
	letters := map[string]string{"s": "local", "p": "listen_port", "l": "listen", "v": "verbose"}
	for _, server := range []bool{true, false} {
		role := map[bool]string{true: "server", false: "client"}[server]
		keys, flags := cab.Keys(role)
		var seen []string
		newFlagSet(cab.DefaultSettings(), server, io.Discard).VisitAll(func(f *flag.Flag) {
			if f.Name == "f" {
				return
			}
			key := strings.ReplaceAll(f.Name, "-", "_")
			if k, ok := letters[f.Name]; ok {
				key = k
			}
			seen = append(seen, key)
			if i := slices.Index(keys, key); i < 0 || flags[i] != f.Name {
				t.Errorf("%s flag -%s: no key %s for it in cab.Keys", role, f.Name, key)
				return
			}
			val, toml := "x", `"x"`
			switch f.Value.(flag.Getter).Get().(type) {
			case bool:
				val, toml = "true", "true"
				if f.DefValue == "true" {
					val, toml = "false", "false"
				}
			case int:
				val, toml = "1234", "1234"
			case time.Duration:
				val, toml = "7s", `"7s"`
			}
			byFlag := cab.DefaultSettings()
			if err := newFlagSet(byFlag, server, io.Discard).Set(f.Name, val); err != nil {
				t.Fatal(err)
			}
			byFile, err := cab.Parse(strings.NewReader(fmt.Sprintf("%s = %s\n", key, toml)), "f.toml")
			if err != nil {
				t.Errorf("%s = %s: %v", key, toml, err)
				return
			}
			byFlag.File = byFile.File
			if !sameSettings(byFlag, byFile) {
				t.Errorf("-%s %s and %s = %s set different things:\n%+v\n%+v", f.Name, val, key, toml, byFlag, byFile)
			}
		})
		slices.Sort(seen)
		if !slices.Equal(seen, keys) {
			t.Errorf("%s: flags %v, keys %v", role, seen, keys)
		}
	}
}

// sameSettings compares the exported fields of two settings.
func sameSettings(a, b *cab.Settings) bool {
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	for i := range va.NumField() {
		if va.Type().Field(i).IsExported() && !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return false
		}
	}
	return true
}
