package cab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// A configuration file holds what cab's flags hold, with the flag names as
// keys (dashes become underscores; -s is local, -p listen_port, -l listen,
// -v verbose), the role, and the peers as [[peer]] tables:
//
//	role = "server"
//	local = "tap:cab0,bridge=br0"
//	psk = "/etc/cab/site.psk"
//	transport = ["udp", "tcp"]
//	keepalive = "25s"
//
//	[[peer]]
//	name = "site-a"
//	public_key = "…"
//	endpoint = "a.example.net:6666"    # a client's server
//	segments = ["blue"]                # a server's client: the segments it may join
//
//	[[segment]]                        # a named segment (-s NAME=SPEC)
//	name = "blue"
//	local = "tap:cab-blue,bridge=br-blue"
//
// Every mistake names the file and line and says how to fix it.

var peerKeys = []string{"name", "public_key", "endpoint", "endpoints", "psk", "keepalive", "transport", "allowed_macs", "allowed_vlans", "segments"}

// ParseFile reads the configuration file at path; see Parse.
func ParseFile(path string) (*Settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-f: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a configuration file (TOML) into the default settings. name
// is the file's name, for errors, which say file:line and the fix. The
// settings still need Check for their role.
func Parse(r io.Reader, name string) (*Settings, error) {
	text, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(text), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, configError(name, pe.Position.Line, "%s", pe.Message)
		}
		return nil, configError(name, 0, "%v", err)
	}
	lines := strings.Split(string(text), "\n")
	s := DefaultSettings()
	s.File, s.lines = name, map[string]int{}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := s.parseKey(k, raw[k], lines); err != nil {
			return nil, err
		}
	}
	// A client's [[peer]] names the carriers to its server; they win over
	// the top-level transport (a server's are refused by Check).
	if len(s.Peers) > 0 && s.Peers[0].Transport != "" {
		s.Transport = s.Peers[0].Transport
	}
	return s, nil
}

// parseKey reads top-level key k of value v.
func (s *Settings) parseKey(k string, v any, lines []string) error {
	line := keyLine(lines, "", 0, k)
	switch k {
	case "peer":
		return s.parsePeers(v, lines)
	case "segment":
		return s.parseSegments(v, lines)
	case "role":
		r, ok := v.(string)
		if !ok || r != "server" && r != "client" {
			return configError(s.File, line, `role = %v: use role = "server" or role = "client"`, v)
		}
		s.Role = r
		s.lines[k] = line
		return nil
	}
	st, ok := lookupSetting(k)
	if !ok {
		known, _ := Keys("")
		known = append(known, "role")
		sort.Strings(known)
		hint := ""
		if c := closest(k, append(known, "peer", "segment")); c != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", c)
		}
		return configError(s.File, line, "unknown key %q%s; the keys are: %s, and [[peer]] and [[segment]] tables", k, hint, strings.Join(known, ", "))
	}
	if err := setValue(k, st.ptr(s), v); err != nil {
		return configError(s.File, line, "%s: %v", k, err)
	}
	s.lines[k] = line
	return nil
}

// setValue sets the setting k at p to the TOML value v, checking its type.
func setValue(k string, p any, v any) error {
	switch p := p.(type) {
	case *bool:
		b, ok := v.(bool)
		if s, quoted := v.(string); quoted && (s == "true" || s == "false") {
			return fmt.Errorf("want true or false without quotes: %q is a quoted string; write %s = %s", s, k, s)
		}
		if !ok {
			return fmt.Errorf("want true or false, not %v", v)
		}
		*p = b
	case *int:
		n, ok := v.(int64)
		if s, quoted := v.(string); quoted {
			if _, err := strconv.Atoi(s); err == nil {
				return fmt.Errorf("want a whole number without quotes: %q is a quoted string; write %s = %s", s, k, s)
			}
		}
		if !ok {
			return fmt.Errorf("want a whole number, not %v", v)
		}
		*p = int(n)
	case *time.Duration:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf(`want a duration in quotes, such as "25s"`)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf(`%q is not a duration: write it like "25s", "2m" or "1h30m"`, s)
		}
		*p = d
	case *string:
		switch x := v.(type) {
		case string:
			*p = x
		case []any: // a list, for the comma-separated settings (transport)
			var parts []string
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("want a list of strings in quotes")
				}
				parts = append(parts, s)
			}
			*p = strings.Join(parts, ",")
		default:
			return fmt.Errorf("want a string in quotes, not %v", v)
		}
	}
	return nil
}

// parsePeers reads the [[peer]] tables.
func (s *Settings) parsePeers(v any, lines []string) error {
	return s.parseTables("peer", peerKeys, v, lines, func(header int) func(k string, line int, v any) error {
		p := PeerSettings{line: map[string]int{"[[peer]]": header}}
		s.Peers = append(s.Peers, p)
		last := &s.Peers[len(s.Peers)-1]
		return func(k string, line int, v any) error {
			last.line[k] = line
			return last.set(k, v)
		}
	})
}

// parseTables reads the [[name]] tables of v, whose keys must be among
// keys: for each table, start (given the header's line) returns what sets
// one key; the keys come in sorted order, each with its line. Every
// mistake names the file and line.
func (s *Settings) parseTables(name string, keys []string, v any, lines []string, start func(header int) func(k string, line int, v any) error) error {
	tables, ok := v.([]map[string]any)
	if !ok {
		return configError(s.File, keyLine(lines, "", 0, name), "%s must be [[%s]] tables", name, name)
	}
	for i, tbl := range tables {
		set := start(tableLine(lines, "[["+name+"]]", i))
		ks := make([]string, 0, len(tbl))
		for k := range tbl {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			line := keyLine(lines, name, i, k)
			if !slices.Contains(keys, k) {
				hint := ""
				if c := closest(k, keys); c != "" {
					hint = fmt.Sprintf(" (did you mean %s?)", c)
				}
				return configError(s.File, line, "unknown key %q in [[%s]]%s; the keys are %s", k, name, hint, strings.Join(keys, ", "))
			}
			if err := set(k, line, tbl[k]); err != nil {
				return configError(s.File, line, "%s: %v", k, err)
			}
		}
	}
	return nil
}

// set sets key k of a [[peer]] table, checking the value's type.
func (p *PeerSettings) set(k string, v any) error {
	var err error
	switch k {
	case "allowed_macs":
		p.AllowedMACs, err = macList(v)
	case "allowed_vlans":
		p.AllowedVLANs, err = vlanList(v)
	case "endpoint", "endpoints":
		var list []string
		list, err = stringList(v)
		p.Endpoints = append(p.Endpoints, list...)
	case "transport":
		var list []string
		list, err = stringList(v)
		p.Transport = strings.Join(list, ",")
	case "segments":
		p.Segments, err = stringList(v)
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
			if p.Keepalive, err = time.ParseDuration(s); err != nil {
				return fmt.Errorf(`%q is not a duration: write it like "25s", "2m" or "1h30m"`, s)
			}
		}
	}
	return err
}

// stringList reads a string, or a list of them.
func stringList(v any) ([]string, error) {
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

// macList reads a MAC address, or a list of them.
func macList(v any) ([]net.HardwareAddr, error) {
	list, err := stringList(v)
	if err != nil {
		return nil, err
	}
	var out []net.HardwareAddr
	for _, s := range list {
		m, err := net.ParseMAC(s)
		if err != nil || len(m) != 6 {
			return nil, fmt.Errorf("%q is not a MAC address: write it like \"02:00:5e:10:00:01\"", s)
		}
		out = append(out, m)
	}
	return out, nil
}

// vlanList reads a VLAN number, or a list of them.
func vlanList(v any) ([]uint16, error) {
	list, ok := v.([]any)
	if !ok {
		list = []any{v}
	}
	var out []uint16
	for _, e := range list {
		n, ok := e.(int64)
		if !ok || n < 0 || n > 4094 {
			return nil, fmt.Errorf("want VLAN numbers from 0 (untagged) to 4094, like [0, 10, 20]")
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// configError is a mistake at a line of a configuration file.
func configError(path string, line int, format string, args ...any) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", path, line, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// keyLine finds the line of key in the file's text: at the top level for
// table "", in the n-th [[table]] otherwise. 0 when not found.
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

// peerLine is the line of the n-th [[peer]] header.
func peerLine(lines []string, n int) int { return tableLine(lines, "[[peer]]", n) }

// tableLine is the line of the n-th header of a [[table]].
func tableLine(lines []string, header string, n int) int {
	idx := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == header {
			idx++
			if idx == n {
				return i + 1
			}
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
