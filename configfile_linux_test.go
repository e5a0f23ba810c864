package cab

// Verified: run on Linux by go test; it swaps fd 0, which is Linux's
// business here (the unit tests of other systems only compile).

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cab/crypto"
)

// TestEmbedding: what the README promises a program that embeds cab: a
// configuration file read with Parse, checked, and run with Open and
// Setup.Run, with no flag set. The port is stdio; at the end of stdin
// the cable ends cleanly.
func TestEmbedding(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "site.psk")
	k := mustKey(t)
	if err := os.WriteFile(psk, []byte(crypto.PublicKey(k).String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := "role = \"server\"\nlocal = \"stdio\"\nlisten = \"127.0.0.1\"\nlisten_port = 0\npsk = \"" + psk + "\"\n" +
		"state_dir = \"" + dir + "\"\nname = \"cabtest-embed\"\n"
	s, err := Parse(strings.NewReader(text), "embed.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(s.Role); err != nil {
		t.Fatal(err)
	}
	stdin, err := os.Open(os.DevNull) // stdio reads fd 0: an empty one ends the cable
	if err != nil {
		t.Fatal(err)
	}
	saved, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Dup2(int(stdin.Fd()), 0)
	defer func() { unix.Dup2(saved, 0); unix.Close(saved) }()
	su, err := Open(s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(su.Carriers.Names) == 0 || !strings.HasPrefix(su.Carriers.Names[0], "udp 127.0.0.1:") {
		t.Errorf("carriers %q", su.Carriers.Names)
	}
	done := make(chan error, 1)
	go func() { done <- su.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end at the end of stdin")
	}
}
