package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"cab"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestControlDirPerSystem(t *testing.T) {
	for _, c := range []struct {
		goos string
		env  map[string]string
		want string
	}{
		{"linux", nil, "/run/cab"},
		{"freebsd", nil, "/var/run/cab"},
		{"darwin", nil, "/var/run/cab"},
		{"windows", map[string]string{"ProgramData": `D:\Data\`}, `D:\Data\cab`},
		{"windows", nil, `C:\ProgramData\cab`},
	} {
		if got := cab.RunDirFor(c.goos, env(c.env)); got != c.want {
			t.Errorf("%s %v: %q, want %q", c.goos, c.env, got, c.want)
		}
	}
	if controlDir != "/run/cab" {
		t.Errorf("controlDir on Linux is %q; the systemd unit and the README say /run/cab", controlDir)
	}
}

func TestStateDirPerSystem(t *testing.T) {
	home := func() (string, error) { return "/home/u", nil }
	noHome := func() (string, error) { return "", errors.New("no home") }
	for _, c := range []struct {
		goos string
		euid int
		env  map[string]string
		want string
	}{
		{"linux", 0, nil, "/var/lib/cab"},
		{"linux", 0, map[string]string{"STATE_DIRECTORY": "/var/lib/cab/b:/x"}, "/var/lib/cab/b"},
		{"linux", 1000, map[string]string{"XDG_STATE_HOME": "/xdg"}, "/xdg/cab"},
		{"linux", 1000, nil, "/home/u/.local/state/cab"},
		{"freebsd", 0, nil, "/var/db/cab"},
		{"freebsd", 1000, nil, "/home/u/.local/state/cab"},
		{"darwin", 0, nil, "/Library/Application Support/cab"},
		{"windows", -1, map[string]string{"LOCALAPPDATA": `C:\Users\u\AppData\Local`}, `C:\Users\u\AppData\Local\cab`},
	} {
		got, err := cab.StateDirFor(c.goos, c.euid, env(c.env), home)
		if err != nil || got != c.want {
			t.Errorf("%s euid %d %v: %q %v, want %q", c.goos, c.euid, c.env, got, err, c.want)
		}
	}
	if _, err := cab.StateDirFor("windows", -1, env(nil), home); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Errorf("windows without LOCALAPPDATA: %v", err)
	}
	if _, err := cab.StateDirFor("linux", 1000, env(nil), noHome); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Errorf("linux without a home: %v", err)
	}
}

func TestOffloadNote(t *testing.T) {
	flags := map[string]bool{"udp-gso": true, "udp-gro": true}
	if n := offloadNote("linux", flags, "on", "on"); n != "" {
		t.Errorf("linux: %q", n)
	}
	if n := offloadNote("freebsd", flags, "on", "on"); !strings.HasPrefix(n, "--udp-gso and --udp-gro need Linux") {
		t.Errorf("freebsd, both asked for: %q", n)
	}
	if n := offloadNote("windows", map[string]bool{"udp-gro": true}, "on", "on"); !strings.HasPrefix(n, "--udp-gro needs Linux") {
		t.Errorf("windows, gro asked for: %q", n)
	}
	if n := offloadNote("darwin", nil, "on", "on"); n != "" {
		t.Errorf("darwin, defaults: %q", n)
	}
	if n := offloadNote("darwin", flags, "off", "off"); n != "" {
		t.Errorf("darwin, both off: %q", n)
	}
}

// The README's table of other systems names the directories these
// functions pick.
func TestREADMESystemPaths(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		for _, label := range []string{"sockets", "state"} {
			if strings.HasPrefix(line, "| "+label) {
				rows[label] = strings.Split(line, "|")[2:6] // linux, freebsd, darwin, windows
			}
		}
	}
	if len(rows) != 2 {
		t.Fatalf("README.md: no sockets and state rows in the Other systems table")
	}
	vars := env(map[string]string{"ProgramData": "%ProgramData%", "LOCALAPPDATA": "%LOCALAPPDATA%"})
	for i, goos := range []string{"linux", "freebsd", "darwin", "windows"} {
		if want := "`" + cab.RunDirFor(goos, vars) + "`"; !strings.Contains(rows["sockets"][i], want) {
			t.Errorf("README.md: sockets on %s: %q, want %s", goos, rows["sockets"][i], want)
		}
		state, _ := cab.StateDirFor(goos, 0, vars, nil)
		if want := "`" + state + "`"; !strings.Contains(rows["state"][i], want) {
			t.Errorf("README.md: state on %s: %q, want %s", goos, rows["state"][i], want)
		}
	}
}
