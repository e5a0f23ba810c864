package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// A configuration file (-f FILE) holds what the flags hold, with the flag
// names as keys (dashes become underscores; -s is local, -p listen_port,
// -l listen, -v verbose), and the peers as [[peer]] tables. Flags given on
// the command line win over the file.
//
//	local = "tap:cab0,bridge=br0"
//	psk = "/etc/cab/site.psk"
//	transport = ["udp", "tcp"]
//	keepalive = "25s"
//
//	[[peer]]
//	name = "site-a"
//	public_key = "…"
//	endpoint = "a.example.net:6666"    # a client's server
//
// Every mistake names the file and line and says how to fix it.

// fileKeys maps a file key to its flag, for the keys that are not simply
// the flag name with underscores.
var fileKeys = map[string]string{"local": "s", "listen_port": "p", "listen": "l", "verbose": "v"}

// filePeer is one [[peer]] table.
type filePeer struct {
	Name, PublicKey, PSK, Keepalive string
	Endpoints                       []string
	Transport                       string
	AllowedMACs                     []net.HardwareAddr
	AllowedVLANs                    []uint16
	line                            map[string]int // where each key is
}

var peerKeys = []string{"name", "public_key", "endpoint", "endpoints", "psk", "keepalive", "transport", "allowed_macs", "allowed_vlans"}

// fileRole reads the role key of a configuration file: "server", "client",
// or "" when it has none.
func fileRole(path string) (string, int, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return "", 0, fmt.Errorf("-f: %w", err)
	}
	var v struct {
		Role any `toml:"role"`
	}
	if _, err := toml.Decode(string(text), &v); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return "", 0, configError(path, pe.Position.Line, "%s", pe.Message)
		}
		return "", 0, configError(path, 0, "%v", err)
	}
	line := keyLine(strings.Split(string(text), "\n"), "", 0, "role")
	switch r := v.Role.(type) {
	case nil:
		return "", 0, nil
	case string:
		if r == "server" || r == "client" {
			return r, line, nil
		}
	}
	return "", line, configError(path, line, `role = %v: use role = "server" or role = "client"`, v.Role)
}

// configError is a mistake at a line of a configuration file.
func configError(path string, line int, format string, args ...any) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", path, line, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// keyLine finds the line of key in the file's text: at the top level for
// table "", in the n-th [[peer]] table otherwise. 0 when not found.
func keyLine(lines []string, table string, n int, key string) int {
	re := regexp.MustCompile(`^\s*("?)` + regexp.QuoteMeta(key) + `("?)\s*=`)
	cur, idx := "", -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[[") {
			cur = strings.Trim(t, "[] ")
			if cur == table {
				idx++
			}
			continue
		}
		if strings.HasPrefix(t, "[") {
			cur = strings.Trim(t, "[] ")
			continue
		}
		if (table == "" && cur == "" || cur == table && idx == n) && re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

// closest suggests the known key nearest to k.
func closest(k string, known []string) string {
	best, bestD := "", 4
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// applyConfigFile sets, from the file at path, every flag of fs that the
// command line did not set, and returns the file's peers.
func applyConfigFile(fs *flag.FlagSet, path string) ([]filePeer, []int, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("-f: %w", err)
	}
	lines := strings.Split(string(text), "\n")
	var raw map[string]any
	_, err = toml.Decode(string(text), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, configError(path, pe.Position.Line, "%s", pe.Message)
		}
		return nil, nil, configError(path, 0, "%v", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var known []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "f" {
			return
		}
		k := strings.ReplaceAll(f.Name, "-", "_")
		for fk, fl := range fileKeys {
			if fl == f.Name {
				k = fk
			}
		}
		known = append(known, k)
	})
	known = append(known, "role")
	sort.Strings(known)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := raw[k]
		if k == "peer" || k == "role" {
			continue // peers below; the role chose the subcommand
		}
		line := keyLine(lines, "", 0, k)
		name := strings.ReplaceAll(k, "_", "-")
		if fl, ok := fileKeys[k]; ok {
			name = fl
		}
		f := fs.Lookup(name)
		if f == nil || name == "f" || strings.Contains(k, "-") {
			hint := ""
			if c := closest(k, append(known, "peer")); c != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", c)
			}
			return nil, nil, configError(path, line, "unknown key %q%s; the keys are: %s, and [[peer]] tables", k, hint, strings.Join(known, ", "))
		}
		s, err := flagValue(f, v)
		if err != nil {
			return nil, nil, configError(path, line, "%s: %v", k, err)
		}
		if set[f.Name] {
			continue // the command line wins
		}
		if err := fs.Set(f.Name, s); err != nil {
			return nil, nil, configError(path, line, "%s = %v: %v (%s)", k, v, err, f.Usage)
		}
	}
	// Peers.
	var peers []filePeer
	var peerLines []int
	if pv, ok := raw["peer"]; ok {
		tables, ok := pv.([]map[string]any)
		if !ok {
			return nil, nil, configError(path, keyLine(lines, "", 0, "peer"), "peer must be [[peer]] tables")
		}
		for i, tbl := range tables {
			p := filePeer{line: map[string]int{}}
			tkeys := make([]string, 0, len(tbl))
			for k := range tbl {
				tkeys = append(tkeys, k)
			}
			sort.Strings(tkeys)
			for _, k := range tkeys {
				v := tbl[k]
				line := keyLine(lines, "peer", i, k)
				p.line[k] = line
				if !contains(peerKeys, k) {
					hint := ""
					if c := closest(k, peerKeys); c != "" {
						hint = fmt.Sprintf(" (did you mean %s?)", c)
					}
					return nil, nil, configError(path, line, "unknown key %q in [[peer]]%s; the keys are %s", k, hint, strings.Join(peerKeys, ", "))
				}
				if err := p.set(k, v); err != nil {
					return nil, nil, configError(path, line, "%s: %v", k, err)
				}
			}
			peers = append(peers, p)
			peerLines = append(peerLines, peerLine(lines, i))
		}
	}
	return peers, peerLines, nil
}

// set sets key k of a [[peer]] table, checking the value's type.
func (p *filePeer) set(k string, v any) error {
	strs := func() ([]string, error) {
		switch x := v.(type) {
		case string:
			return []string{x}, nil
		case []any:
			var out []string
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("want a list of strings in quotes")
				}
				out = append(out, s)
			}
			return out, nil
		}
		return nil, fmt.Errorf("want a string in quotes, or a list of them")
	}
	switch k {
	case "allowed_macs":
		list, err := strs()
		if err != nil {
			return err
		}
		for _, s := range list {
			m, err := net.ParseMAC(s)
			if err != nil || len(m) != 6 {
				return fmt.Errorf("%q is not a MAC address: write it like \"02:00:5e:10:00:01\"", s)
			}
			p.AllowedMACs = append(p.AllowedMACs, m)
		}
	case "allowed_vlans":
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for _, e := range list {
			n, ok := e.(int64)
			if !ok || n < 0 || n > 4094 {
				return fmt.Errorf("want VLAN numbers from 0 (untagged) to 4094, like [0, 10, 20]")
			}
			p.AllowedVLANs = append(p.AllowedVLANs, uint16(n))
		}
	case "endpoint", "endpoints":
		list, err := strs()
		if err != nil {
			return err
		}
		p.Endpoints = append(p.Endpoints, list...)
	case "transport":
		list, err := strs()
		if err != nil {
			return err
		}
		p.Transport = strings.Join(list, ",")
	default:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string in quotes")
		}
		switch k {
		case "name":
			p.Name = s
		case "public_key":
			p.PublicKey = s
		case "psk":
			p.PSK = s
		case "keepalive":
			if _, err := time.ParseDuration(s); err != nil {
				return fmt.Errorf(`%q is not a duration: write it like "25s", "2m" or "1h30m"`, s)
			}
			p.Keepalive = s
		}
	}
	return nil
}

// peerLine is the line of the n-th [[peer]] header.
func peerLine(lines []string, n int) int {
	idx := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "[[peer]]" {
			idx++
			if idx == n {
				return i + 1
			}
		}
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// flagValue turns a TOML value into the text of flag f, checking its type.
func flagValue(f *flag.Flag, v any) (string, error) {
	getter, _ := f.Value.(flag.Getter)
	var cur any
	if getter != nil {
		cur = getter.Get()
	}
	switch cur.(type) {
	case bool:
		b, ok := v.(bool)
		if !ok {
			return "", fmt.Errorf("want true or false, not %v", v)
		}
		return strconv.FormatBool(b), nil
	case int:
		n, ok := v.(int64)
		if !ok {
			return "", fmt.Errorf("want a whole number, not %v", v)
		}
		return strconv.FormatInt(n, 10), nil
	case time.Duration:
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf(`want a duration in quotes, such as "25s"`)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return "", fmt.Errorf(`%q is not a duration: write it like "25s", "2m" or "1h30m"`, s)
		}
		return s, nil
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case []any: // a list, for the comma-separated flags (transport)
		var parts []string
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("want a list of strings in quotes")
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string in quotes, not %v", v)
}
