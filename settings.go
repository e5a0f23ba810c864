package cab

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport/quic"
)

// Settings are what a configuration file or cab's command line says: the
// role, the port, the carriers, the key files and the peers, before
// anything is opened. Parse reads them from a file, the cab command from
// its flags (a flag per setting, named as the file's key with dashes);
// Check completes them for their role, and Open makes a running cable of
// them. DefaultSettings holds the defaults.
type Settings struct {
	// Role is "server" (a responder that clients dial) or "client".
	Role string

	// File is the configuration file the settings came from, if any.
	File string

	Local     string        // local: the port, tap:NAME…, vde:DIR[N] or stdio
	PSK       string        // psk: a pre-shared key file
	Key       string        // key: the private key file (default STATE_DIR/ROLE.key)
	StateDir  string        // state_dir: where generated keys live
	Transport string        // transport: the carriers, comma-separated
	Keepalive time.Duration // keepalive
	DeadAfter time.Duration // dead_after: fast failure detection (0: the default)
	Name      string        // name: the instance, for its control and pipe sockets
	Verbose   bool          // verbose: debug logs
	LogFormat string        // log_format: text or json
	BPDU      string        // bpdu: pass or drop
	MTU       string        // mtu: of a TAP in no bridge, auto or a number
	MSSClamp  string        // mss_clamp: auto, off or an MSS
	Metrics   string        // metrics: ADDR of a Prometheus endpoint
	UDPGSO    string        // udp_gso: on or off
	UDPGRO    string        // udp_gro: on or off
	Workers   string        // crypto_workers: auto or a number
	QUICALPN  string        // quic_alpn
	FloodRate int           // flood_rate: from each client and the local port (0: no limit)

	// A server's.
	ListenPort    int           // listen_port: UDP and TCP port
	Listen        string        // listen: address to listen on ("": all)
	Allow         string        // allow: the allow file
	Isolate       bool          // isolate
	AllowAnyPSK   bool          // allow_any_psk: with [[peer]] tables and a psk, any PSK holder too
	FDBAge        time.Duration // fdb_age
	MaxMACs       int           // max_macs
	FloodBudget   int           // flood_budget: copies of flooded frames a second (0: no limit)
	VDESharedPort bool          // vde_shared_port
	QUICCert      string        // quic_cert
	QUICKey       string        // quic_key
	DNSZone       string        // dns_zone
	DNSListen     string        // dns_listen
	DNSNoData     bool          // dns_nodata

	// A client's.
	ServerKey  string // server_key: the server's public key
	QUICSNI    string // quic_sni
	Resolver   string // resolver: for dns:// carriers
	SSHCommand string // ssh_command
	SSHRemote  string // ssh_remote

	// Servers are a client's server addresses, HOST[:PORT], tried in
	// order: the command's arguments, or the endpoints of its [[peer]].
	Servers []string

	// Peers are the file's [[peer]] tables: a server's clients, or a
	// client's one server.
	Peers []PeerSettings

	// Segments are the named segments (-s NAME=SPEC, [[segment]]).
	Segments []SegmentSettings

	lines        map[string]int // where each top-level key of the file is
	localSet     bool           // -s SPEC was given
	serverName   string         // a client's name for its server
	quicResetKey *[32]byte      // a server's, derived from its key by Open
}

// PeerSettings is one [[peer]] table.
type PeerSettings struct {
	Name         string
	PublicKey    string
	PSK          string // a pre-shared key file of this peer's own
	Keepalive    time.Duration
	Endpoints    []string // a client's server addresses
	Transport    string   // a client's carriers
	AllowedMACs  []net.HardwareAddr
	AllowedVLANs []uint16
	Segments     []string // a server's client: the named segments it may join

	line map[string]int // where each key is; "[[peer]]" its header
}

// DefaultSettings returns the settings of a cab given nothing.
func DefaultSettings() *Settings {
	return &Settings{
		Local: "tap:cab0", Transport: "udp", Keepalive: DefaultKeepalive, Name: "cab", LogFormat: "text",
		BPDU: "pass", MSSClamp: "auto", UDPGSO: "on", UDPGRO: "on", Workers: "auto", QUICALPN: quic.DefaultALPN,
		ListenPort: DefaultPort, FDBAge: defaultFDBMaxAge, MaxMACs: defaultFDBMaxPerPeer, FloodRate: DefaultFloodRate,
		FloodBudget: DefaultFloodBudget, DNSListen: ":53",
		SSHCommand: "ssh -T -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3", SSHRemote: "cab pipe",
	}
}

// A setting is one key of a configuration file: its flag and the role it
// belongs to ("" both).
type setting struct {
	key, flag, role string
	ptr             func(*Settings) any
}

// settingTable lists the keys of a configuration file. A key is its flag's
// name with underscores, except where flag says otherwise.
var settingTable = []setting{
	{"local", "s", "", func(s *Settings) any { return &s.Local }},
	{"psk", "psk", "", func(s *Settings) any { return &s.PSK }},
	{"key", "key", "", func(s *Settings) any { return &s.Key }},
	{"state_dir", "state-dir", "", func(s *Settings) any { return &s.StateDir }},
	{"transport", "transport", "", func(s *Settings) any { return &s.Transport }},
	{"keepalive", "keepalive", "", func(s *Settings) any { return &s.Keepalive }},
	{"dead_after", "dead-after", "", func(s *Settings) any { return &s.DeadAfter }},
	{"name", "name", "", func(s *Settings) any { return &s.Name }},
	{"verbose", "v", "", func(s *Settings) any { return &s.Verbose }},
	{"log_format", "log-format", "", func(s *Settings) any { return &s.LogFormat }},
	{"bpdu", "bpdu", "", func(s *Settings) any { return &s.BPDU }},
	{"mtu", "mtu", "", func(s *Settings) any { return &s.MTU }},
	{"mss_clamp", "mss-clamp", "", func(s *Settings) any { return &s.MSSClamp }},
	{"metrics", "metrics", "", func(s *Settings) any { return &s.Metrics }},
	{"udp_gso", "udp-gso", "", func(s *Settings) any { return &s.UDPGSO }},
	{"udp_gro", "udp-gro", "", func(s *Settings) any { return &s.UDPGRO }},
	{"crypto_workers", "crypto-workers", "", func(s *Settings) any { return &s.Workers }},
	{"quic_alpn", "quic-alpn", "", func(s *Settings) any { return &s.QUICALPN }},
	{"listen_port", "p", "server", func(s *Settings) any { return &s.ListenPort }},
	{"listen", "l", "server", func(s *Settings) any { return &s.Listen }},
	{"allow", "allow", "server", func(s *Settings) any { return &s.Allow }},
	{"isolate", "isolate", "server", func(s *Settings) any { return &s.Isolate }},
	{"allow_any_psk", "allow-any-psk", "server", func(s *Settings) any { return &s.AllowAnyPSK }},
	{"fdb_age", "fdb-age", "server", func(s *Settings) any { return &s.FDBAge }},
	{"max_macs", "max-macs", "server", func(s *Settings) any { return &s.MaxMACs }},
	{"flood_rate", "flood-rate", "", func(s *Settings) any { return &s.FloodRate }},
	{"flood_budget", "flood-budget", "server", func(s *Settings) any { return &s.FloodBudget }},
	{"vde_shared_port", "vde-shared-port", "server", func(s *Settings) any { return &s.VDESharedPort }},
	{"quic_cert", "quic-cert", "server", func(s *Settings) any { return &s.QUICCert }},
	{"quic_key", "quic-key", "server", func(s *Settings) any { return &s.QUICKey }},
	{"dns_zone", "dns-zone", "server", func(s *Settings) any { return &s.DNSZone }},
	{"dns_listen", "dns-listen", "server", func(s *Settings) any { return &s.DNSListen }},
	{"dns_nodata", "dns-nodata", "server", func(s *Settings) any { return &s.DNSNoData }},
	{"server_key", "server-key", "client", func(s *Settings) any { return &s.ServerKey }},
	{"quic_sni", "quic-sni", "client", func(s *Settings) any { return &s.QUICSNI }},
	{"resolver", "resolver", "client", func(s *Settings) any { return &s.Resolver }},
	{"ssh_command", "ssh-command", "client", func(s *Settings) any { return &s.SSHCommand }},
	{"ssh_remote", "ssh-remote", "client", func(s *Settings) any { return &s.SSHRemote }},
}

func lookupSetting(key string) (setting, bool) {
	for _, st := range settingTable {
		if st.key == key {
			return st, true
		}
	}
	return setting{}, false
}

// Keys returns the keys of a configuration file for role ("server" or
// "client"; "" for all), sorted, and for each the flag of the cab command
// that sets the same thing.
func Keys(role string) (keys, flags []string) {
	table := slices.Clone(settingTable)
	slices.SortFunc(table, func(a, b setting) int { return strings.Compare(a.key, b.key) })
	for _, st := range table {
		if role == "" || st.role == "" || st.role == role {
			keys = append(keys, st.key)
			flags = append(flags, st.flag)
		}
	}
	return keys, flags
}

// describe names a key for messages: "listen_port (-p)".
func (st setting) describe() string {
	if len(st.flag) == 1 {
		return st.key + " (-" + st.flag + ")"
	}
	return st.key
}

// Check checks the settings for role ("server" or "client"), which the
// file's role key, if any, must agree with, and completes a client's from
// its [[peer]] table where the flags said nothing: the server's key, the
// PSK file, the carriers and the server's addresses. Every mistake in the
// file names the file and line.
func (s *Settings) Check(role string) error {
	if role != "server" && role != "client" {
		return fmt.Errorf("settings: role %q: use server or client", role)
	}
	if s.Role != "" && s.Role != role {
		return s.errorf(s.lines["role"], "role = %q, but this is cab %s: run cab %s -f %s, or cab run -f %s", s.Role, role, s.Role, s.File, s.File)
	}
	s.Role = role
	for k, line := range s.lines {
		if st, ok := lookupSetting(k); ok && st.role != "" && st.role != role {
			return s.errorf(line, "%s is a %s's setting, and this is a %s: remove it", k, st.role, role)
		}
	}
	if err := s.checkPeers(); err != nil {
		return err
	}
	if err := s.checkSegments(); err != nil {
		return err
	}
	if role == "server" {
		if len(s.Servers) != 0 {
			return fmt.Errorf("server: unexpected argument %q (the port is -p PORT)", s.Servers[0])
		}
		if s.ListenPort < 0 || s.ListenPort > 65535 {
			return fmt.Errorf("server: -p %d: not a port number (0-65535)", s.ListenPort)
		}
	} else if len(s.Servers) == 0 && !strings.Contains(s.Transport, "://") {
		return fmt.Errorf("client: give the server's address, e.g. cab client 192.0.2.1:%d (more than one: tried in order)", DefaultPort)
	}
	return s.checkValues()
}

// checkValues checks the settings that take one of a few words.
func (s *Settings) checkValues() error {
	if s.LogFormat != "text" && s.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", s.LogFormat)
	}
	for _, f := range []struct{ name, v string }{{"udp-gso", s.UDPGSO}, {"udp-gro", s.UDPGRO}} {
		if f.v != "on" && f.v != "off" {
			return fmt.Errorf("--%s=%s: use on or off", f.name, f.v)
		}
	}
	if s.BPDU != "pass" && s.BPDU != "drop" {
		return fmt.Errorf("--bpdu=%s: use pass or drop", s.BPDU)
	}
	if err := CheckName(s.Name); err != nil {
		return err
	}
	if s.FloodRate < 0 || s.FloodBudget < 0 {
		return s.errorf(max(s.lines["flood_rate"], s.lines["flood_budget"]), "flood_rate (--flood-rate) %d, flood_budget (--flood-budget) %d: use a number of frames (copies) a second, or 0 for no limit", s.FloodRate, s.FloodBudget)
	}
	if d := s.DeadAfter; d != 0 && (d < MinDeadAfter || d > MaxDeadAfter) {
		return s.errorf(s.lines["dead_after"], "dead_after (--dead-after) %v: use %v to %v, or 0 for the default detection", d, MinDeadAfter, MaxDeadAfter)
	}
	if _, err := s.carrier(); err != nil {
		return s.errorf(s.lines["local"], "local (-s) %s: %v", s.Local, err)
	}
	if _, err := s.cryptoWorkers(); err != nil {
		return err
	}
	_, err := s.mssClamp()
	return err
}

// CheckName refuses instance names that are not plain file names.
func CheckName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || len(name) > 64 {
		return fmt.Errorf("--name %q: use a short plain name such as site-b", name)
	}
	return nil
}

func (s *Settings) cryptoWorkers() (int, error) {
	switch s.Workers {
	case "auto":
		return 0, nil
	case "0":
		return -1, nil
	}
	n, err := strconv.Atoi(s.Workers)
	if err != nil || n < 0 || n > 256 {
		return 0, fmt.Errorf("--crypto-workers=%s: use auto or a number from 0 to 256", s.Workers)
	}
	return n, nil
}

func (s *Settings) mssClamp() (int, error) {
	switch s.MSSClamp {
	case "auto":
		return 0, nil
	case "off":
		return -1, nil
	}
	n, err := strconv.Atoi(s.MSSClamp)
	if err != nil || n < 536 || n > 65495 {
		return 0, fmt.Errorf("--mss-clamp %q: use auto, off, or an MSS from 536 to 65495", s.MSSClamp)
	}
	return n, nil
}

// checkPeers checks the [[peer]] tables: a server's are the clients it
// accepts, a client's one is its server, which fills in what the flags
// did not say.
func (s *Settings) checkPeers() error {
	server := s.Role == "server"
	for i, p := range s.Peers {
		if p.PublicKey == "" && (server || s.PSK == "" && p.PSK == "" && s.ServerKey == "") {
			return s.errorf(p.at("[[peer]]"), "[[peer]] %q has no public_key: add public_key = \"…\" (cab pubkey < its.key prints it)", p.Name)
		}
		if p.PublicKey != "" { // a client with a PSK alone derives the server's key from it
			k, err := crypto.ParsePublicKey(p.PublicKey)
			if err != nil {
				return s.errorf(p.at("public_key"), "public_key: %v (cab pubkey < its.key prints one)", err)
			}
			if k == (crypto.PublicKey{}) {
				return s.errorf(p.at("public_key"), "public_key is all zeros, a placeholder: write the key that cab pubkey < its.key prints")
			}
		}
		switch {
		case server && len(p.Endpoints) > 0:
			return s.errorf(max(p.at("endpoint"), p.at("endpoints")), "endpoint is for a client's [[peer]], its server: a server learns where its clients are")
		case !server && len(p.Segments) > 0:
			return s.errorf(p.at("segments"), "segments in a client's [[peer]]: a client names the segments it joins with -s NAME=SPEC or [[segment]] tables")
		case server && p.Transport != "":
			return s.errorf(p.at("transport"), "transport in a server's [[peer]]: a server takes a client over any transport it listens on (set transport at the top)")
		case !server && i > 0:
			return s.errorf(p.at("[[peer]]"), "a client has one [[peer]], its server; run one cab client per server")
		case !server:
			if s.ServerKey == "" {
				s.ServerKey = p.PublicKey
			}
			if s.PSK == "" && p.PSK != "" {
				s.PSK = p.PSK
			}
			if len(s.Servers) == 0 {
				s.Servers = append(s.Servers, p.Endpoints...)
			}
			if len(s.Servers) == 0 && !strings.Contains(s.Transport, "://") {
				return s.errorf(p.at("[[peer]]"), "the server's [[peer]] has no endpoint: add endpoint = \"HOST:PORT\"")
			}
			s.serverName = p.Name
		}
	}
	return nil
}

// at is the line of key k in the table, or of its header.
func (p *PeerSettings) at(k string) int {
	if l := p.line[k]; l > 0 {
		return l
	}
	return p.line["[[peer]]"]
}

// errorf is a mistake at a line of the configuration file, or in the
// settings when they came from no file.
func (s *Settings) errorf(line int, format string, args ...any) error {
	if s.File == "" {
		return fmt.Errorf(format, args...)
	}
	return configError(s.File, line, format, args...)
}

// carrier is what the cable does with the carrier of a tap: port, from its
// carrier= option (CarrierAuto for any other port).
func (s *Settings) carrier() (CarrierMode, error) {
	arg, ok := strings.CutPrefix(s.Local, "tap:")
	if !ok {
		return CarrierAuto, nil
	}
	ts, err := bridgeif.ParseTAPSpec(arg)
	if err != nil {
		return CarrierAuto, err
	}
	return ParseCarrierMode(ts.Carrier)
}
