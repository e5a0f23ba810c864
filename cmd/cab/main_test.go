package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab"
	"cab/crypto"
)

func TestGenkeyPubkey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "site.key")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"genkey"}, nil, f, &stderr); code != 0 {
		t.Fatalf("genkey exit %d: %s", code, stderr.String())
	}
	f.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("genkey into a file left mode %v, want 0600", st.Mode().Perm())
	}
	k, err := crypto.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var out bytes.Buffer
	if code := run([]string{"pubkey"}, bytes.NewReader(b), &out, &stderr); code != 0 {
		t.Fatalf("pubkey exit %d: %s", code, stderr.String())
	}
	if got, want := strings.TrimSpace(out.String()), crypto.PrivateKey(k).Public().String(); got != want {
		t.Fatalf("pubkey = %q, want %q", got, want)
	}
	out.Reset()
	stderr.Reset()
	if code := run([]string{"pubkey"}, strings.NewReader("not a key"), &out, &stderr); code != 1 || !strings.Contains(stderr.String(), "cab genkey") {
		t.Fatalf("pubkey of garbage: exit %d, stderr %q", code, stderr.String())
	}
}

// TestGenkeyOutput: genkey -o creates the key file with mode 0600 from
// the moment it exists (a racer that opens it as soon as it appears, with
// a umask of 0, never sees another mode), and never overwrites a file or
// follows a link.
func TestGenkeyOutput(t *testing.T) {
	zeroUmask(t)
	dir := t.TempDir()
	for i := range 50 {
		path := filepath.Join(dir, fmt.Sprintf("k%d.key", i))
		seen := make(chan os.FileMode, 1)
		stop := make(chan struct{})
		go func() {
			defer close(seen)
			for {
				if st, err := os.Lstat(path); err == nil {
					seen <- st.Mode().Perm()
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		var stderr bytes.Buffer
		code := run([]string{"genkey", "-o", path}, nil, &bytes.Buffer{}, &stderr)
		close(stop)
		if code != 0 {
			t.Fatalf("genkey -o: exit %d: %s", code, stderr.String())
		}
		if m, ok := <-seen; ok && m != 0o600 {
			t.Fatalf("the key file was seen with mode %v", m)
		}
		if _, err := crypto.LoadKeyFile(path); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "k0.key")
	before, _ := os.ReadFile(path)
	var stderr bytes.Buffer
	if code := run([]string{"genkey", "-o", path}, nil, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "already exists") {
		t.Fatalf("genkey -o over a key: exit %d, %q", code, stderr.String())
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("genkey -o changed an existing key file")
	}
	link := filepath.Join(dir, "link.key")
	os.Symlink(filepath.Join(dir, "target"), link)
	if code := run([]string{"genkey", "-o", link}, nil, &bytes.Buffer{}, &bytes.Buffer{}); code == 0 {
		t.Fatal("genkey -o wrote through a dangling link")
	}
	if _, err := os.Stat(filepath.Join(dir, "target")); err == nil {
		t.Fatal("genkey -o created the target of a link")
	}
}

// TestReadmeGenkey: the README makes keys with genkey -o, never with a
// shell redirection that creates the file readable by others first.
func TestReadmeGenkey(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "genkey >") || !strings.Contains(string(b), "cab genkey -o ") {
		t.Fatal("README.md makes a key with `cab genkey > FILE`; use cab genkey -o FILE")
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{}, 2, "Usage"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"client"}, 1, "give the server's address"},
		{[]string{"client", "--state-dir", "STATE", "192.0.2.1"}, 1, "--server-key"},
		{[]string{"server", "extra"}, 1, "unexpected argument"},
		{[]string{"server", "-p", "70000"}, 1, "not a port number"},
		{[]string{"server", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"client", "--psk", "/nonexistent/psk", "192.0.2.1"}, 1, "--psk"},
		{[]string{"server", "--help"}, 0, "Usage: cab server"},
		{[]string{"--version"}, 0, "cab "},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		for i, a := range c.args {
			if a == "STATE" {
				c.args[i] = t.TempDir()
			}
		}
		code := run(c.args, strings.NewReader(""), &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("cab %v: exit %d, output %q; want exit %d and %q", c.args, code, out.String()+errb.String(), c.code, c.want)
		}
	}
}

func TestKeyFileModeRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "site.psk")
	k, _ := crypto.GenerateKey()
	if err := os.WriteFile(path, []byte(crypto.PublicKey(k).String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"client", "--psk", path, "192.0.2.1"}, nil, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "chmod 600") {
		t.Fatalf("exit %d, stderr %q; want 1 and a chmod hint", code, errb.String())
	}
}

func TestWithFlagsAfterAddress(t *testing.T) {
	s, err := parseFlags([]string{"192.0.2.1:6666", "--psk", "x", "-s", "tap:t1"}, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Servers) != 1 || s.Servers[0] != "192.0.2.1:6666" || s.PSK != "x" || s.Local != "tap:t1" {
		t.Fatalf("settings %+v", s)
	}
}

// TestHelp: --help and -h work on every subcommand: exit 0 and its usage,
// without doing the subcommand's work (no key printed, stdin not read).
func TestHelp(t *testing.T) {
	for _, sub := range []string{"server", "client", "run", "status", "plug", "pipe", "genkey", "pubkey"} {
		for _, h := range []string{"--help", "-h"} {
			var out, errb bytes.Buffer
			stdin, w := io.Pipe() // never written: a subcommand that reads it would hang
			done := make(chan int, 1)
			go func() { done <- run([]string{sub, h}, stdin, &out, &errb) }()
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("cab %s %s: still running after 10 s (reading stdin?)", sub, h)
			}
			w.Close()
			text := out.String() + errb.String()
			if code != 0 || !strings.Contains(text, "Usage: cab "+sub) {
				t.Errorf("cab %s %s: exit %d, output %q; want exit 0 and its usage", sub, h, code, text)
			}
			if strings.Count(text, "=") > 0 && (sub == "genkey" || sub == "pubkey") {
				t.Errorf("cab %s %s printed a key: %q", sub, h, text)
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"genkey", "extra"}, nil, &out, &errb); code != 2 || out.Len() != 0 {
		t.Errorf("cab genkey extra: exit %d, stdout %q; want exit 2 and no key", code, out.String())
	}
}

// TestJSONError: with --log-format json, an error at start is a JSON line
// too, and the only line.
func TestJSONError(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"client", "--log-format", "json", "--psk", "/nonexistent/psk", "192.0.2.1"}, nil, &out, &errb)
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	var m map[string]any
	if code != 1 || len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &m) != nil || m["level"] != "ERROR" ||
		!strings.Contains(m["msg"].(string), "--psk") {
		t.Errorf("exit %d, stderr %q; want exit 1 and one JSON error line naming --psk", code, errb.String())
	}
}

// TestPrintStatusCarrier: cab status shows the carrier when the cable
// follows the peers with it, and the fast failure detection when set.
func TestPrintStatusCarrier(t *testing.T) {
	var b strings.Builder
	printStatus(&b, &cab.Status{Peers: []cab.PeerStatus{{Name: "hub", PublicKey: "JjT+47rR0HJPbM+N3wNmoCf194DvI9B1RbqeGPcllVs="}},
		Carrier: "down", DeadAfter: time.Second})
	for _, want := range []string{"carrier: down (follows the peers", "dead after: 1s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printStatus(&b, &cab.Status{})
	if strings.Contains(b.String(), "carrier") || strings.Contains(b.String(), "dead after") {
		t.Errorf("a cable that leaves its carrier alone, without --dead-after:\n%s", b.String())
	}
}
