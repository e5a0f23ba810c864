package allow

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cab/crypto"
)

func TestParse(t *testing.T) {
	k1, k2 := mustKey(t).Public(), mustKey(t).Public()
	good := "# clients\n\n" + k1.String() + " site-b   # the branch office\n  " + k2.String() + "\n"
	es, err := Parse(strings.NewReader(good), "clients.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Key != k1 || es[0].Name != "site-b" || es[1].Key != k2 || es[1].Name != "" {
		t.Fatalf("got %+v", es)
	}
	k3 := mustKey(t).Public()
	segs := k1.String() + " lab segments=blue,red\n" + k2.String() + " segments=red\n" + k3.String() + "\n"
	if es, err = Parse(strings.NewReader(segs), "clients.txt"); err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Name != "lab" || strings.Join(es[0].Segments, ",") != "blue,red" ||
		es[1].Name != "" || strings.Join(es[1].Segments, ",") != "red" || es[2].Segments != nil {
		t.Fatalf("segments: got %+v", es)
	}
	bad := map[string]string{
		"empty segment":  "clients.txt:2: segments=blue,: list the segment names",
		"segments first": "clients.txt:2: too many fields",
		"not base64":     "clients.txt:2: ",
		"two names":      "clients.txt:2: too many fields",
		"duplicate":      "clients.txt:3: key already listed on line 2",
		"short":          "clients.txt:2: ",
		"bit 255":        "clients.txt:2: public key is not canonical",
	}
	high := k2
	high[31] |= 0x80
	inputs := map[string]string{
		"empty segment":  "\n" + k1.String() + " a segments=blue,\n",
		"segments first": "\n" + k1.String() + " segments=blue a\n",
		"not base64":     "# x\n!!!!\n",
		"two names":      "\n" + k1.String() + " a b\n",
		"duplicate":      "\n" + k1.String() + "\n" + k1.String() + " again\n",
		"short":          "\nAAAA\n",
		"bit 255":        "\n" + high.String() + " again\n",
	}
	for name, in := range inputs {
		_, err := Parse(strings.NewReader(in), "clients.txt")
		if err == nil || !strings.HasPrefix(err.Error(), bad[name]) {
			t.Errorf("%s: err = %v, want prefix %q", name, err, bad[name])
		}
	}
}

func FuzzParse(f *testing.F) {
	k := mustKey(f).Public().String()
	f.Add(k + " name\n# c\n")
	f.Add("\n\n#" + k)
	f.Add(k + " " + k + "\n")
	f.Add(k + " lab segments=blue,red\n")
	f.Fuzz(func(t *testing.T, s string) {
		es, err := Parse(strings.NewReader(s), "f")
		if err != nil {
			return
		}
		seen := map[crypto.PublicKey]bool{}
		for _, e := range es {
			if seen[e.Key] {
				t.Fatal("duplicate key accepted")
			}
			seen[e.Key] = true
			if strings.ContainsAny(e.Name, " \t#\n") {
				t.Fatalf("name %q has separators", e.Name)
			}
		}
	})
}

func TestFileReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.txt")
	k1, k2 := mustKey(t).Public(), mustKey(t).Public()
	if err := os.WriteFile(path, []byte(k1.String()+" one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var warned []error
	a, err := Load(path, func(err error) { warned = append(warned, err) })
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := a.Lookup(k1); !ok || name != "one" {
		t.Fatalf("k1: %q %v", name, ok)
	}
	if _, ok := a.Lookup(k2); ok {
		t.Fatal("k2 allowed before it was listed")
	}
	if err := os.WriteFile(path, []byte(k2.String()+" two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.checked = time.Time{} // do not wait a second
	a.mu.Unlock()
	if name, ok := a.Lookup(k2); !ok || name != "two" {
		t.Fatalf("k2 after edit: %q %v", name, ok)
	}
	if _, ok := a.Lookup(k1); ok {
		t.Fatal("k1 still allowed after removal")
	}
	// A broken edit keeps the last good list and warns once.
	if err := os.WriteFile(path, []byte("garbage line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		a.mu.Lock()
		a.checked = time.Time{}
		a.mu.Unlock()
		if _, ok := a.Lookup(k2); !ok {
			t.Fatal("last good list lost")
		}
	}
	if len(warned) != 1 {
		t.Errorf("warned %d times, want once: %v", len(warned), warned)
	}
}

func mustKey(t testing.TB) crypto.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFileTornWrite: a writer that truncates the allow file and writes it
// a moment later (os.WriteFile, `echo … > FILE`, an editor saving in place)
// never makes the File drop the clients listed before and after: a check
// that falls between the two waits for the file to settle.
func TestFileTornWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.txt")
	k := mustKey(t).Public()
	if err := os.WriteFile(path, []byte(k.String()+" branch\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The writer pauses 5 ms, and 150 ms: a writer descheduled between
	// the truncation and the write on a busy machine.
	for i, pause := range []time.Duration{5, 5, 150, 5, 150} {
		name := fmt.Sprintf("branch-%d", i)
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		wrote := make(chan error, 1)
		go func() {
			time.Sleep(pause * time.Millisecond)
			wrote <- os.WriteFile(path, []byte(k.String()+" "+name+"\n"), 0o600)
		}()
		a.mu.Lock()
		a.checked = time.Time{} // look at the file now, while it is empty
		a.mu.Unlock()
		got, ok := a.Lookup(k)
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if !ok || got != name {
			t.Fatalf("a check during the write (the writer paused %d ms): %q %v, want %q allowed", pause, got, ok, name)
		}
	}
	// A file emptied on purpose revokes the key, within the second the
	// README promises.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	emptied := time.Now()
	a.mu.Lock()
	a.checked = time.Time{}
	a.mu.Unlock()
	if _, ok := a.Lookup(k); ok || time.Since(emptied) > time.Second {
		t.Fatalf("an emptied file: allowed %v after %v, want revoked within 1 s", ok, time.Since(emptied))
	}
}
