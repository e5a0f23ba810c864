package cab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"cab/allow"
	"cab/bridgeif"
	"cab/crypto"
)

// A Setup is a cable opened from Settings, with its port and carriers, and
// what its operator should be told.
type Setup struct {
	Cable     *Cable
	Port      bridgeif.Port // nil when every peer has a port of its own
	Carriers  *Carriers
	PublicKey crypto.PublicKey
	// Notes are for the operator, at start: a key created, the server's
	// public key, what to run on a client and how to authorise it.
	Notes []string

	s      *Settings
	log    *slog.Logger
	psk    *crypto.Secret
	client PeerConfig // a client's server, with its dialers
}

// Open opens what s describes (s has passed Check): the keys (a key that
// does not exist yet is created in the state directory), the carriers, the
// allow file and the port, and makes a Cable of them. Run runs it.
func Open(s *Settings, log *slog.Logger) (*Setup, error) {
	if log == nil {
		log = slog.Default()
	}
	su := &Setup{s: s, log: log}
	cfg, err := s.config(log)
	if err != nil {
		return nil, err
	}
	su.psk = cfg.PSK
	if err := su.loadKey(&cfg); err != nil {
		return nil, err
	}
	su.PublicKey = cfg.PrivateKey.Public()
	if s.Role == "server" {
		s.quicResetKey = quicResetKey(cfg.PrivateKey)
	}
	if su.Carriers, err = OpenCarriers(s, log); err != nil {
		return nil, err
	}
	if err := su.open(&cfg); err != nil {
		su.Carriers.Close()
		if su.Port != nil {
			su.Port.Close()
		}
		for _, sc := range cfg.Segments {
			if sc.Port != nil {
				sc.Port.Close()
			}
		}
		return nil, err
	}
	return su, nil
}

// open does the rest of Open once the carriers are open.
func (su *Setup) open(cfg *Config) error {
	s := su.s
	if s.Role == "server" {
		if err := su.serverPeers(cfg); err != nil {
			return err
		}
	} else if err := su.clientPeer(cfg); err != nil {
		return err
	}
	if err := su.openPort(cfg); err != nil {
		return err
	}
	for i := range cfg.Segments {
		port, err := su.OpenSegment(cfg.Segments[i])
		if err != nil {
			return fmt.Errorf("segment %s: %w", cfg.Segments[i].Name, err)
		}
		cfg.Segments[i].Port = port
	}
	if err := su.setMTU(); err != nil {
		return err
	}
	c, err := New(*cfg, su.Port, su.Carriers.Conns)
	if err != nil {
		return err
	}
	su.Cable = c
	return nil
}

// config is the cable's configuration as far as the settings say it
// without opening anything but the PSK file.
func (s *Settings) config(log *slog.Logger) (Config, error) {
	cfg := Config{Responder: s.Role == "server", Keepalive: s.Keepalive, Isolate: s.Isolate, Logger: log,
		FDBMaxAge: s.FDBAge, MaxMACs: s.MaxMACs, FloodRate: s.FloodRate, FloodBudget: s.FloodBudget, DropBPDU: s.BPDU == "drop",
		DeadAfter: s.DeadAfter}
	if s.FloodRate == 0 {
		cfg.FloodRate = -1
	}
	if s.FloodBudget == 0 || s.Role != "server" { // a client's copies are its frames: the flood rate bounds them
		cfg.FloodBudget = -1
	}
	var err error
	if cfg.CryptoWorkers, err = s.cryptoWorkers(); err != nil {
		return cfg, err
	}
	if cfg.MSSClamp, err = s.mssClamp(); err != nil {
		return cfg, err
	}
	if cfg.Carrier, err = s.carrier(); err != nil {
		return cfg, err
	}
	if s.PSK != "" {
		b, err := crypto.LoadKeyFile(s.PSK)
		if err != nil {
			return cfg, fmt.Errorf("--psk: %w", err)
		}
		psk := crypto.Secret(b)
		cfg.PSK = &psk
	}
	cfg.Segments, err = s.segmentConfigs()
	return cfg, err
}

// loadKey sets the cable's static key: the key file, a PSK-only server's
// key derived from the PSK, or the one in the state directory (created on
// the first run).
func (su *Setup) loadKey(cfg *Config) error {
	s := su.s
	switch {
	case s.Key != "":
		b, err := crypto.LoadKeyFile(s.Key)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		cfg.PrivateKey = crypto.PrivateKey(b)
	case s.Role == "server" && cfg.PSK != nil:
		cfg.PrivateKey = crypto.PSKStatic(*cfg.PSK)
	default:
		dir, err := s.StateDirPath()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, s.Role+".key")
		k, created, err := loadOrCreateKey(path)
		if err != nil {
			return err
		}
		cfg.PrivateKey = k
		if created {
			su.Notes = append(su.Notes, fmt.Sprintf("created the %s key %s", s.Role, path))
		}
	}
	return nil
}

// StateDirPath returns the directory for generated keys: state_dir, or
// systemd's StateDirectory, or the system's place (StateDirFor).
func (s *Settings) StateDirPath() (string, error) {
	if s.StateDir != "" {
		return s.StateDir, nil
	}
	return StateDirFor(runtime.GOOS, os.Geteuid(), os.Getenv, os.UserHomeDir)
}

// loadOrCreateKey loads the key at path, or creates it (and its directory)
// when it does not exist. created reports the latter.
func loadOrCreateKey(path string) (k crypto.PrivateKey, created bool, err error) {
	b, err := crypto.LoadKeyFile(path)
	if err == nil {
		return crypto.PrivateKey(b), false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return k, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return k, false, fmt.Errorf("create state directory: %w (set another with --state-dir)", err)
	}
	k, err = crypto.GenerateKey()
	if err != nil {
		return k, false, err
	}
	if err := crypto.WriteKeyFile(path, k); err != nil {
		return k, false, err
	}
	return k, true, nil
}

// serverPeers sets whom a server accepts: its [[peer]] tables, and the
// allow file, or anyone holding the PSK, or the state directory's
// clients.txt (created empty).
func (su *Setup) serverPeers(cfg *Config) error {
	s := su.s
	peers, err := s.peerConfigs()
	if err != nil {
		return err
	}
	cfg.Peers = peers
	warn := func(err error) { su.log.Warn("allow file not reloaded", "err", err) }
	switch {
	case s.Allow != "":
		af, err := allow.Load(s.Allow, warn)
		if err != nil {
			return fmt.Errorf("--allow: %w", err)
		}
		cfg.Allow, cfg.AllowedSegments = af.Lookup, af.Segments
		su.Notes = append(su.Notes, fmt.Sprintf("%d client keys allowed by %s (edits take effect at once)", af.Len(), s.Allow))
	case len(peers) > 0 && !(cfg.PSK != nil && s.AllowAnyPSK):
		su.Notes = append(su.Notes, fmt.Sprintf("%d clients accepted, from the [[peer]] tables of %s, and no other", len(peers), s.File))
	case cfg.PSK != nil:
		cfg.AllowAny = true
		su.Notes = append(su.Notes, "any client holding the pre-shared key is accepted",
			fmt.Sprintf("on a client, with a copy of %s: cab client --psk %s %s", s.PSK, s.PSK, s.hostAddrs()))
	default:
		dir, err := s.StateDirPath()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, "clients.txt")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			header := "# Public keys of the clients this server accepts, one per line, optionally\n# followed by a name. Edits take effect at once.\n"
			if err := os.WriteFile(path, []byte(header), 0o600); err != nil {
				return fmt.Errorf("create %s: %w", path, err)
			}
		}
		af, err := allow.Load(path, warn)
		if err != nil {
			return err
		}
		cfg.Allow, cfg.AllowedSegments = af.Lookup, af.Segments
		su.Notes = append(su.Notes,
			fmt.Sprintf("on a client: cab client --server-key %s %s", su.PublicKey, s.hostAddrs()),
			"the client makes its key on its first run, client.key in its state directory (/var/lib/cab as root); "+
				"to authorise it, run on the client: cab pubkey < /var/lib/cab/client.key",
			fmt.Sprintf("and add the line it prints to %s on this server, optionally followed by a name (%d allowed now; edits take effect at once)", path, af.Len()),
		)
	}
	if s.Key != "" || cfg.PSK == nil {
		su.Notes = append([]string{fmt.Sprintf("server public key: %s", su.PublicKey)}, su.Notes...)
	}
	return nil
}

// hostAddrs is where a client reaches this server: the listen address, or
// this host's global unicast addresses (IPv4 first), each with the port;
// THIS_HOST when it has none.
func (s *Settings) hostAddrs() string {
	port := strconv.Itoa(s.ListenPort)
	if ip := net.ParseIP(s.Listen); ip != nil && !ip.IsUnspecified() {
		return net.JoinHostPort(s.Listen, port)
	}
	var v4, v6 []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			v4 = append(v4, net.JoinHostPort(ipn.IP.String(), port))
		} else {
			v6 = append(v6, net.JoinHostPort(ipn.IP.String(), port))
		}
	}
	all := append(v4, v6...)
	switch {
	case len(all) == 0:
		return "THIS_HOST:" + port
	case len(all) == 1:
		return all[0]
	}
	return all[0] + " (or this host's other addresses: " + strings.Join(all[1:min(len(all), 5)], ", ") + ")"
}

// peerConfigs are a server's [[peer]] tables, their PSK files read.
func (s *Settings) peerConfigs() ([]PeerConfig, error) {
	var out []PeerConfig
	for _, p := range s.Peers {
		k, _ := crypto.ParsePublicKey(p.PublicKey) // Check parsed it
		pc := PeerConfig{Name: p.Name, PublicKey: k, Keepalive: p.Keepalive,
			AllowedMACs: p.AllowedMACs, AllowedVLANs: p.AllowedVLANs, Segments: p.Segments}
		if p.PSK != "" {
			b, err := crypto.LoadKeyFile(p.PSK)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: psk: %w", s.File, p.at("psk"), err)
			}
			secret := crypto.Secret(b)
			pc.PSK = &secret
		}
		out = append(out, pc)
	}
	return out, nil
}

// serverPeer is a client's server as the settings say: its key (given, or
// derived from the PSK), name, and the settings of its [[peer]]; no
// dialers.
func (s *Settings) serverPeer(psk *crypto.Secret, flag string) (PeerConfig, error) {
	pc := PeerConfig{Name: "server"}
	if len(s.Peers) > 0 {
		p := s.Peers[0]
		pc.Keepalive, pc.AllowedMACs, pc.AllowedVLANs = p.Keepalive, p.AllowedMACs, p.AllowedVLANs
	}
	if s.serverName != "" {
		pc.Name = s.serverName
	}
	switch {
	case s.ServerKey != "":
		k, err := crypto.ParsePublicKey(s.ServerKey)
		if err != nil {
			return pc, fmt.Errorf("%s: %w", flag, err)
		}
		pc.PublicKey = k
	case psk != nil:
		pc.PublicKey = crypto.PSKStatic(*psk).Public()
	default:
		return pc, errors.New("client: give the server's public key (--server-key, printed by the server at start) or a pre-shared key (--psk)")
	}
	return pc, nil
}

// clientPeer sets a client's one peer, its server, reached over the
// carriers in order.
func (su *Setup) clientPeer(cfg *Config) error {
	sp, err := su.s.serverPeer(cfg.PSK, "--server-key")
	if err != nil {
		return err
	}
	sp.Dial, sp.Fallback = su.Carriers.Dialers[0], su.Carriers.Dialers[1:]
	cfg.Peers = []PeerConfig{sp}
	su.client = sp
	if su.s.ServerKey != "" {
		su.Notes = append(su.Notes, fmt.Sprintf("client public key: %s: add this line to the server's allow file (its --allow FILE, or clients.txt in its state directory)", su.PublicKey))
	}
	return nil
}

// openPort opens the local port, or for a server on a vde_switch (unless
// vde_shared_port) a switch port per client, as vde_cryptcab does: the
// switch sees each client on its own port.
func (su *Setup) openPort(cfg *Config) error {
	s := su.s
	if !s.hasDefaultPort() {
		return nil // named segments only
	}
	if strings.HasPrefix(s.Local, "vde:") && s.Role == "server" && !s.VDESharedPort {
		open, err := OpenPortPerPeer(s.Local, su.log)
		if err != nil {
			return err
		}
		cfg.PortPerPeer = open
		return nil
	}
	port, err := OpenPort(s.Local, su.PublicKey)
	if err != nil {
		return err
	}
	su.Port = port
	return nil
}

// setMTU applies a number given as mtu to a TAP port; Run follows the
// paths for auto.
func (su *Setup) setMTU() error {
	spec := su.s.MTU
	if spec == "" {
		return nil
	}
	tap, ok := su.Port.(*bridgeif.TAP)
	if !ok {
		return fmt.Errorf("--mtu: only a TAP that is in no bridge has an MTU to set (a bridge takes the smallest MTU of its members)")
	}
	if spec == "auto" {
		return nil
	}
	n, err := strconv.Atoi(spec)
	if err != nil || n < int(MinL3MTU) || n > int(MaxL3MTU) {
		return fmt.Errorf("--mtu %q: use auto or a number from %d to %d", spec, MinL3MTU, MaxL3MTU)
	}
	return tap.SetMTU(n)
}

// UDPOffloads turns the UDP carrier's offloads on as the settings say and
// reports which the kernel has.
func (su *Setup) UDPOffloads() (gso, gro bool) {
	if su.Carriers.UDP == nil {
		return false, false
	}
	return su.Carriers.UDP.Offload(su.s.UDPGSO == "on", su.s.UDPGRO == "on")
}

// Run runs the cable until ctx is done (see Cable.Run); with mtu = "auto"
// the TAP's MTU follows the largest frame that crosses without fragments.
func (su *Setup) Run(ctx context.Context) error {
	if tap, ok := su.Port.(*bridgeif.TAP); ok && su.s.MTU == "auto" {
		go su.followMTU(ctx, tap)
	}
	return su.Cable.Run(ctx)
}

// Close closes what Open opened, for a Setup that will not Run.
func (su *Setup) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	su.Cable.Run(ctx)
}

// followMTU sets the TAP's MTU to the cable's frame MTU now and whenever
// the paths to the peers change.
func (su *Setup) followMTU(ctx context.Context, tap *bridgeif.TAP) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		mtu := int(su.Cable.FrameMTU().L3(0))
		if cur, err := tap.MTU(); err == nil && cur != mtu {
			if err := tap.SetMTU(mtu); err != nil {
				su.log.Warn("cannot set the TAP's MTU", "err", err)
			} else {
				su.log.Info("tap mtu", "mtu", mtu)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// OpenSegment opens the port of a named segment, from its spec. A vde:
// port is one switch port that the segment's peers share.
func (su *Setup) OpenSegment(sc SegmentConfig) (bridgeif.Port, error) {
	return OpenPort(sc.Spec, su.PublicKey)
}
