package main

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"cab"
)

// TestREADMECommands: every command in the README's code blocks that starts
// a cable (cab server, cab client, cab run) parses with the flags it
// shows, leaves no word for the shell to glob, and, within a block, a
// client dials a port a server of that block listens on.
func TestREADMECommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, blk := range regexp.MustCompile("(?s)\n```[a-z]*\n(.*?)\n```").FindAllStringSubmatch(string(b), -1) {
		var listen []int
		type dial struct {
			cmd  string
			port int
		}
		var dials []dial
		for _, line := range strings.Split(blk[1], "\n") {
			for _, cmd := range regexp.MustCompile(`;|&&|\|\||\||&| = `).Split(line, -1) {
				words, globs := shellWords(cmd)
				for len(words) > 0 && (words[0] == "sudo" || words[0] == "ip" && len(words) > 3 && words[1] == "netns" && words[2] == "exec") {
					if words[0] == "sudo" {
						words, globs = words[1:], globs[1:]
					} else {
						words, globs = words[4:], globs[4:]
					}
				}
				if len(words) < 2 || words[0] != "cab" && !strings.HasSuffix(words[0], "/cab") ||
					words[1] != "server" && words[1] != "client" && words[1] != "run" {
					continue
				}
				n++
				for i, g := range globs {
					if g {
						t.Errorf("README: %q: %s is not quoted, and the shell globs it", cmd, words[i])
					}
				}
				if words[1] == "run" {
					if !slices.Contains(words, "-f") {
						t.Errorf("README: %q: cab run without -f FILE", cmd)
					}
					continue
				}
				args := words[2:]
				if i := slices.Index(args, "-f"); i >= 0 && i+1 < len(args) {
					args = slices.Delete(slices.Clone(args), i, i+2) // the file is not here
				}
				s, err := parseFlags(args, words[1] == "server", io.Discard)
				if err != nil {
					t.Errorf("README: %q: %v", cmd, err)
					continue
				}
				if words[1] == "server" {
					listen = append(listen, s.ListenPort)
				}
				for _, a := range s.Servers {
					if _, p, err := splitPort(a); err == nil {
						dials = append(dials, dial{cmd, p})
					}
				}
			}
		}
		for _, d := range dials {
			if len(listen) > 0 && !slices.Contains(listen, d.port) {
				t.Errorf("README: %q dials port %d, but the servers of its block listen on %v", d.cmd, d.port, listen)
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d commands that start a cable in the README; is the extraction broken?", n)
	}
}

// splitPort returns the port of HOST:PORT.
func splitPort(a string) (string, int, error) {
	i := strings.LastIndex(a, ":")
	if i < 0 || strings.HasSuffix(a, "]") {
		return a, cab.DefaultPort, strconv.ErrSyntax
	}
	p, err := strconv.Atoi(a[i+1:])
	return a[:i], p, err
}

// shellWords splits a command line as a POSIX shell would (quotes,
// backslashes, a # comment), and reports for each word whether it holds a
// glob character outside quotes.
func shellWords(line string) (words []string, globs []bool) {
	var w strings.Builder
	in, glob, quote := false, false, rune(0)
	end := func() {
		if in {
			words, globs = append(words, w.String()), append(globs, glob)
		}
		w.Reset()
		in, glob = false, false
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == '\'':
			w.WriteRune(r)
		case r == '\\' && i+1 < len(rs) && quote != '\'':
			i++
			w.WriteRune(rs[i])
			in = true
		case quote == '"':
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			end()
		case r == '#' && !in:
			end()
			return words, globs
		default:
			if strings.ContainsRune("*?[", r) {
				glob = true
			}
			w.WriteRune(r)
			in = true
		}
	}
	end()
	return words, globs
}
