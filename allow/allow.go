// Package allow reads allow files: the public keys of the clients a server
// accepts, one per line with an optional name and the segments the client
// may join. A File reads its file again
// when it changes, so that edits take effect without a restart.
package allow

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"cab/crypto"
)

// Entry is one line of an allow file: a client's public key, an optional
// name, and the named segments it may join.
type Entry struct {
	Key      crypto.PublicKey
	Name     string
	Segments []string
}

// Parse reads an allow file: one base64 public key per line, optionally
// followed by white space and a name, and by segments=NAME,NAME (the
// named segments the client may join); blank lines and everything after a
// # are ignored. Errors name the file and line. name is the file's name, for
// errors.
func Parse(r io.Reader, name string) ([]Entry, error) {
	var out []Entry
	seen := map[crypto.PublicKey]int{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		k, err := crypto.ParsePublicKey(fields[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v: each line is a public key (from `cab pubkey`), optionally followed by a name", name, line, err)
		}
		e := Entry{Key: k}
		rest := fields[1:]
		if len(rest) > 0 && strings.HasPrefix(rest[len(rest)-1], "segments=") {
			list := strings.TrimPrefix(rest[len(rest)-1], "segments=")
			for _, seg := range strings.Split(list, ",") {
				if seg == "" {
					return nil, fmt.Errorf("%s:%d: segments=%s: list the segment names with commas and no spaces, such as segments=blue,red", name, line, list)
				}
				e.Segments = append(e.Segments, seg)
			}
			rest = rest[:len(rest)-1]
		}
		if len(rest) > 1 {
			return nil, fmt.Errorf("%s:%d: too many fields: a line is a public key, at most one name (no spaces in the name) and segments=NAME,NAME", name, line)
		}
		if prev, dup := seen[k]; dup {
			return nil, fmt.Errorf("%s:%d: key already listed on line %d: remove one of the lines", name, line, prev)
		}
		seen[k] = line
		if len(rest) == 1 {
			e.Name = rest[0]
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// File answers whether a public key is listed in a file, reading the
// file again when it changes (its size, time or inode; checked at most
// every Recheck), so that a server picks up a newly authorised client, and
// drops a removed one, without a restart. A file that becomes unreadable
// or invalid keeps the last good list and logs why once.
type File struct {
	path string
	warn func(error)

	mu      sync.Mutex // guards the following fields
	checked time.Time
	info    os.FileInfo // of the file last read
	keys    map[crypto.PublicKey]Entry
	lastErr string
}

// Recheck is how often at most a File looks at its file again.
const Recheck = 200 * time.Millisecond

// settle is how long a file must have been left alone before a File reads
// it: a writer that truncates the file and then writes it (os.WriteFile,
// `echo … > FILE`, an editor saving in place) leaves it empty or half
// written for a moment, and reading it then would drop every client it
// lists. An empty file must have been left alone for settleEmpty: that
// is the state between the truncation and the write, which lasts longer
// than settle when the writer is descheduled on a busy machine, and a file
// emptied on purpose revokes every client a moment later all the same.
// settleTries bounds the wait for a file that keeps changing.
const (
	settle      = 20 * time.Millisecond
	settleEmpty = 300 * time.Millisecond
	settleTries = 10
)

// changed reports whether the file described by st is another, or another
// version, than the one described by old.
func changed(st, old os.FileInfo) bool {
	return !st.ModTime().Equal(old.ModTime()) || st.Size() != old.Size() || !os.SameFile(st, old)
}

// settled stats the file once it has not changed for settle, waiting for
// that (at most settleTries times settle) when it changed a moment ago.
func (a *File) settled() (os.FileInfo, error) {
	st, err := os.Stat(a.path)
	for i := 0; err == nil && i < settleTries; i++ {
		need := settle
		if st.Size() == 0 {
			need = settleEmpty
		}
		age := time.Since(st.ModTime())
		if age >= need || age < 0 {
			break
		}
		time.Sleep(need - age)
		st, err = os.Stat(a.path)
	}
	return st, err
}

// Load reads path. warn receives the errors of later re-reads.
func Load(path string, warn func(error)) (*File, error) {
	a := &File{path: path, warn: warn}
	if err := a.reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// reload reads the file again, and again (at most settleTries times) while
// it changes under the reading, so that a File never takes half a file.
func (a *File) reload() error {
	var err error
	for range settleTries {
		var done bool
		if done, err = a.read(); done {
			return err
		}
		time.Sleep(settle)
	}
	return err
}

// read reads the file once; done is false when the file changed while it
// was read, and the result is not kept.
func (a *File) read() (done bool, err error) {
	f, err := os.Open(a.path)
	if err != nil {
		return true, fmt.Errorf("allow file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return true, fmt.Errorf("allow file: %w", err)
	}
	entries, err := Parse(f, a.path)
	if now, serr := os.Stat(a.path); serr == nil && changed(now, st) {
		return false, fmt.Errorf("allow file %s: changed while it was read", a.path)
	}
	if err != nil {
		return true, err
	}
	keys := make(map[crypto.PublicKey]Entry, len(entries))
	for _, e := range entries {
		keys[e.Key] = e
	}
	a.keys, a.info = keys, st
	return true, nil
}

// Len returns the number of keys listed.
func (a *File) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}

// Lookup reports whether key is listed, and its name.
func (a *File) Lookup(key crypto.PublicKey) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now(); now.Sub(a.checked) >= Recheck {
		a.checked = now
		st, err := a.settled()
		if err == nil && changed(st, a.info) {
			err = a.reload()
		}
		if err != nil && err.Error() != a.lastErr && a.warn != nil {
			a.warn(err)
		}
		if err != nil {
			a.lastErr = err.Error()
		} else {
			a.lastErr = ""
		}
	}
	e, ok := a.keys[key]
	return e.Name, ok
}

// Segments returns the named segments key may join, as its line says.
func (a *File) Segments(key crypto.PublicKey) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[key].Segments
}
