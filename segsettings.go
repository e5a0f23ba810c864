package cab

import (
	"fmt"
	"slices"
	"strings"

	"cab/bridgeif"
	"cab/crypto"
)

// SegmentSettings is one named segment: -s NAME=SPEC or a [[segment]]
// table.
type SegmentSettings struct {
	Name         string
	Local        string // the port's spec, as -s takes it
	PSK          string // the segment's own pre-shared key file
	Isolate      bool
	MaxMACs      int
	FloodRate    int
	AllowedVLANs []uint16

	line map[string]int // where each key is; "[[segment]]" its header
}

var segmentKeys = []string{"name", "local", "psk", "isolate", "max_macs", "flood_rate", "allowed_vlans"}

// SetLocal takes a value of -s: a port spec is the local port (the default
// segment's); NAME=SPEC is a named segment, whose SPEC may end with
// ,psk=FILE (the segment's own PSK) and ,isolate. A named segment given
// twice keeps the last.
func (s *Settings) SetLocal(v string) error {
	name, spec, ok := strings.Cut(v, "=")
	if !ok || name == "" || strings.ContainsAny(name, ":,/") {
		s.Local, s.localSet = v, true
		return nil
	}
	seg := SegmentSettings{Name: name}
	var rest []string
	for _, opt := range strings.Split(spec, ",") {
		switch {
		case strings.HasPrefix(opt, "psk="):
			seg.PSK = strings.TrimPrefix(opt, "psk=")
		case opt == "isolate":
			seg.Isolate = true
		default:
			rest = append(rest, opt)
		}
	}
	seg.Local = strings.Join(rest, ",")
	if err := CheckSegmentName(name); err != nil {
		return err
	}
	if seg.Local == "" {
		return fmt.Errorf("-s %s: give the segment's port, such as -s %s=tap:cab-%s", v, name, name)
	}
	s.Segments = slices.DeleteFunc(s.Segments, func(o SegmentSettings) bool { return o.Name == name })
	s.Segments = append(s.Segments, seg)
	return nil
}

// hasDefaultPort reports whether the settings give the cable a port of its
// own (the default segment): always without named segments; with them,
// only when -s SPEC or local says so.
func (s *Settings) hasDefaultPort() bool {
	return len(s.Segments) == 0 || s.localSet || s.lines["local"] > 0
}

// parseSegments reads the [[segment]] tables.
func (s *Settings) parseSegments(v any, lines []string) error {
	return s.parseTables("segment", segmentKeys, v, lines, func(header int) func(k string, line int, v any) error {
		s.Segments = append(s.Segments, SegmentSettings{line: map[string]int{"[[segment]]": header}})
		g := &s.Segments[len(s.Segments)-1]
		return func(k string, line int, v any) error {
			g.line[k] = line
			return g.set(k, v)
		}
	})
}

// set sets key k of a [[segment]] table, checking the value's type.
func (g *SegmentSettings) set(k string, v any) error {
	var err error
	switch k {
	case "allowed_vlans":
		g.AllowedVLANs, err = vlanList(v)
	case "isolate":
		err = setValue(k, &g.Isolate, v)
	case "max_macs":
		err = setValue(k, &g.MaxMACs, v)
	case "flood_rate":
		err = setValue(k, &g.FloodRate, v)
	case "name":
		err = setValue(k, &g.Name, v)
	case "local":
		err = setValue(k, &g.Local, v)
	case "psk":
		err = setValue(k, &g.PSK, v)
	}
	return err
}

// at is the line of key k in the table, or of its header.
func (g *SegmentSettings) at(k string) int {
	if l := g.line[k]; l > 0 {
		return l
	}
	return g.line["[[segment]]"]
}

// checkSegments checks the named segments: names, ports, and the segments
// the [[peer]] tables name.
func (s *Settings) checkSegments() error {
	seen := map[string]bool{}
	for _, g := range s.Segments {
		if err := CheckSegmentName(g.Name); err != nil {
			return s.errorf(g.at("name"), "%v", err)
		}
		if seen[g.Name] {
			return s.errorf(g.at("name"), "segment %q given twice: remove one", g.Name)
		}
		seen[g.Name] = true
		if g.Local == "" {
			return s.errorf(g.at("[[segment]]"), "segment %q has no port: add local = \"tap:cab-%s\" (or -s %s=SPEC)", g.Name, g.Name, g.Name)
		}
		if g.MaxMACs < 0 || g.FloodRate < 0 {
			return s.errorf(max(g.at("max_macs"), g.at("flood_rate")), "segment %q: max_macs and flood_rate are counts: use a number, or leave them out for the cable's", g.Name)
		}
		if vid, tap := vlanOf(g.Local); vid != 0 && len(g.AllowedVLANs) > 0 && !slices.Contains(g.AllowedVLANs, 0) {
			return s.errorf(g.at("allowed_vlans"), "segment %q: its port is VLAN %d of the TAP %s, whose frames are untagged inside the cable, and allowed_vlans lets in no untagged frame: add 0 to allowed_vlans, or leave it out", g.Name, vid, tap)
		}
	}
	if err := s.checkSegmentTAPs(); err != nil {
		return err
	}
	if s.Role == "client" && len(s.Segments) > maxJoins {
		return s.errorf(s.Segments[maxJoins].at("[[segment]]"), "a client joins at most %d segments (this one names %d): run a second cab client (--name) for the rest", maxJoins, len(s.Segments))
	}
	if s.Role != "server" {
		return nil
	}
	for _, p := range s.Peers {
		for _, name := range p.Segments {
			if !seen[name] {
				return s.errorf(p.at("segments"), "[[peer]] %q: no segment %q on this server: add it (-s %s=SPEC or a [[segment]] table) or remove it from segments", p.Name, name, name)
			}
		}
	}
	return nil
}

// segmentConfigs are the named segments as the cable takes them, their
// PSK files read and their ports not yet opened.
func (s *Settings) segmentConfigs() ([]SegmentConfig, error) {
	var out []SegmentConfig
	for _, g := range s.Segments {
		sc := SegmentConfig{Name: g.Name, Spec: g.Local, Isolate: g.Isolate, MaxMACs: g.MaxMACs, FloodRate: g.FloodRate, AllowedVLANs: g.AllowedVLANs}
		if g.PSK != "" {
			b, err := crypto.LoadKeyFile(g.PSK)
			if err != nil {
				return nil, s.errorf(g.at("psk"), "segment %s: psk: %v", g.Name, err)
			}
			secret := crypto.Secret(b)
			sc.PSK = &secret
		}
		out = append(out, sc)
	}
	return out, nil
}

// PortDescription says what the cable's ports are, for its log: the local
// port, and each named segment's.
func (s *Settings) PortDescription() string {
	var parts []string
	if s.hasDefaultPort() {
		parts = append(parts, s.Local)
	}
	for _, g := range s.Segments {
		parts = append(parts, g.Name+"="+g.Local)
	}
	return strings.Join(parts, " ")
}

// checkSegmentTAPs refuses two ports on one TAP, unless they are VLANs of
// it as a trunk (vlan=N).
func (s *Settings) checkSegmentTAPs() error {
	owner := map[string]string{}
	check := func(who, spec string, line int) error {
		arg, ok := strings.CutPrefix(spec, "tap:")
		if !ok {
			return nil
		}
		ts, err := bridgeif.ParseTAPSpec(arg)
		if err != nil || ts.VLAN != 0 {
			return nil // a bad spec is told when it is opened; VLANs may share
		}
		if o, dup := owner[ts.Name]; dup {
			return s.errorf(line, "%s and %s are both the TAP %s: give each its own TAP, or make them VLANs of it as a trunk (vlan=N)", o, who, ts.Name)
		}
		owner[ts.Name] = who
		return nil
	}
	if s.hasDefaultPort() {
		if err := check("the local port", s.Local, s.lines["local"]); err != nil {
			return err
		}
	}
	for _, g := range s.Segments {
		if err := check("segment "+g.Name, g.Local, g.at("local")); err != nil {
			return err
		}
	}
	return nil
}

// vlanOf returns the VLAN and the TAP of a port spec tap:NAME,vlan=N; 0
// for any other spec.
func vlanOf(spec string) (uint16, string) {
	arg, ok := strings.CutPrefix(spec, "tap:")
	if !ok {
		return 0, ""
	}
	ts, err := bridgeif.ParseTAPSpec(arg)
	if err != nil {
		return 0, ""
	}
	return ts.VLAN, ts.Name
}
