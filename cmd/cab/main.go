// Command cab is a secure cross-site Ethernet cable: it joins a local L2
// attachment (a TAP device) to remote cabs over encrypted, authenticated
// UDP.
//
//	cab server [-p PORT] [-s tap:NAME] [--psk FILE | --key FILE [--allow FILE]]
//	cab client [-s tap:NAME] [--psk FILE | --key FILE --server-key KEY] HOST[:PORT]
//	cab genkey -o site.key
//	cab pubkey < site.key
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"cab"
	"cab/bridgeif"
	"cab/crypto"
	"cab/transport/quic"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `cab is a secure cross-site Ethernet cable.

Usage:
  cab server [flags]              accept clients and join them to the local port
  cab client [flags] HOST[:PORT]  join the local port to a server
  cab run -f FILE [flags]         a server or client as the file's role says (cab@.service)
  cab status [--json|--fdb]       show the peers of a running cab
  cab plug SPEC                   join stdin/stdout (vde_plug's stream format) to a port,
                                  e.g. cab plug vde:/tmp/sw, a vde_plug drop-in for dpipe
  cab pipe [--name N]             join stdin/stdout to the running server (the far end of ssh://)
  cab genkey -o FILE              write a new private key (base64) into FILE, a new file of mode 0600
  cab genkey                      print a new private key
  cab pubkey                      read a private key on stdin, print its public key
  cab --version                   print the version

Run 'cab server --help' or 'cab client --help' for their flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		err = runCable(args[1:], true, stdout, stderr)
	case "client":
		err = runCable(args[1:], false, stdout, stderr)
	case "run":
		err = runFile(args[1:], stdout, stderr)
	case "status":
		err = status(args[1:], stdout, stderr)
	case "plug":
		err = plug(args[1:], stderr)
	case "pipe":
		err = pipe(args[1:], stdin, stdout, stderr)
	case "genkey":
		err = genkey(args[1:], stdout, stderr)
	case "pubkey":
		err = pubkey(stdin, stdout)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "cab %s\n", version)
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "cab: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "cab: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// genkey prints a new private key, or with -o FILE writes it into FILE,
// which it creates with mode 0600 and never overwrites: the key is never
// in a file that anyone else could open, not even for a moment (a shell's
// `> FILE` creates the file world-readable before cab runs).
func genkey(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the key into this new `file`, created with mode 0600 (an existing file is never overwritten)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cab genkey: unexpected %q: use cab genkey -o FILE\n", fs.Arg(0))
		return errUsage
	}
	k, err := crypto.GenerateKey()
	if err != nil {
		return err
	}
	if *out != "" {
		if err := crypto.CreateKeyFile(*out, k); err != nil {
			return fmt.Errorf("genkey: %w", err)
		}
		return nil
	}
	// A key redirected into a file is made private at once.
	if f, ok := stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if err := f.Chmod(0o600); err != nil {
				return fmt.Errorf("genkey: make the key file private: %w", err)
			}
		}
	}
	_, err = fmt.Fprintln(stdout, crypto.PublicKey(k).String())
	return err
}

func pubkey(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, 4096))
	if err != nil {
		return fmt.Errorf("pubkey: read stdin: %w", err)
	}
	k, err := crypto.ParseKey(string(b))
	if err != nil {
		return fmt.Errorf("pubkey: stdin: %w (give it a key from `cab genkey`)", err)
	}
	_, err = fmt.Fprintln(stdout, crypto.PrivateKey(k).Public().String())
	return err
}

// options are the flags of server and client.
type options struct {
	port         int
	listen       string
	spec         string
	pskFile      string
	keyFile      string
	allowFile    string
	serverKey    string
	stateDir     string
	keepalive    time.Duration
	isolate      bool
	verbose      bool
	logFormat    string
	name         string
	fdbAge       time.Duration
	maxMACs      int
	floodRate    int
	bpdu         string
	mssClamp     string
	vdeShared    bool
	mtu          string
	udpGSO       string
	udpGRO       string
	workers      string
	transports   string
	quicCert     string
	quicKey      string
	quicALPN     string
	quicSNI      string
	quicResetKey *[32]byte // a server's, from its cab key
	sshCommand   string
	sshRemote    string
	dnsZone      string
	dnsListen    string
	resolver     string
	dnsNoData    bool
	metrics      string
	configFile   string
	peers        []cab.PeerConfig // from the configuration file
	serverName   string           // a client's name for its server
	serverPeer   cab.PeerConfig   // a client's server as its [[peer]] says (keepalive, allowed MACs)
	setByFlag    map[string]bool  // flags given on the command line
	peerPSKs     []peerPSK        // the PSK files of a server's peers, by index
}

// peerPSK is where a server's [[peer]] keeps its own PSK ("" for none).
type peerPSK struct{ path, where string }

// loadPeerPSKs reads the PSK files of the server's peers into o.peers.
func (o *options) loadPeerPSKs() error {
	for i, pp := range o.peerPSKs {
		if pp.path == "" {
			continue
		}
		b, err := crypto.LoadKeyFile(pp.path)
		if err != nil {
			return fmt.Errorf("%s: psk: %w", pp.where, err)
		}
		secret := crypto.Secret(b)
		o.peers[i].PSK = &secret
	}
	return nil
}

func parseFlags(args []string, server bool, stderr io.Writer) (*options, []string, error) {
	name := "client"
	if server {
		name = "server"
	}
	fs := flag.NewFlagSet("cab "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.spec, "s", "tap:cab0", "local port: tap:NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=off], vde:DIR[N] or stdio")
	fs.StringVar(&o.pskFile, "psk", "", "pre-shared key `file` (from cab genkey); alone it is enough for a two-site link")
	fs.StringVar(&o.keyFile, "key", "", "private key `file` (default: STATE_DIR/"+name+".key, created on first run)")
	fs.StringVar(&o.stateDir, "state-dir", "", "state `directory` (default "+stateDirHelp()+")")
	fs.BoolVar(&o.verbose, "v", false, "log debug messages")
	fs.StringVar(&o.name, "name", "cab", "instance `name`: the control socket is "+controlDir+"/NAME.sock")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.bpdu, "bpdu", "pass", "spanning-tree BPDUs: pass or drop")
	fs.StringVar(&o.mtu, "mtu", "", "MTU of a TAP that is in no bridge: auto (follow the largest that crosses without fragments) or a number; default: leave it (1500)")
	fs.StringVar(&o.mssClamp, "mss-clamp", "auto", "TCP MSS clamping of frames entering the cable: auto, off, or the IPv4 MSS")
	fs.StringVar(&o.configFile, "f", "", "configuration `file` (TOML; flags given here win over it)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (e.g. 127.0.0.1:9667)")
	fs.StringVar(&o.udpGSO, "udp-gso", "on", "UDP segmentation offload (one send for a run of packets), where the kernel has it: on or off")
	fs.StringVar(&o.udpGRO, "udp-gro", "on", "UDP receive offload (the kernel glues datagrams), where the kernel has it: on or off")
	fs.StringVar(&o.workers, "crypto-workers", "auto", "goroutines that help seal and open large batches, frames kept in order: auto (one fewer than the cores from 4 cores up, none below) or a number (0: none)")
	fs.StringVar(&o.quicALPN, "quic-alpn", quic.DefaultALPN, "TLS application `protocol` that quic offers; both ends must agree (h3 looks like HTTP/3)")
	if server {
		fs.StringVar(&o.transports, "transport", "udp", "`list` of transports to listen on, comma-separated: udp, tcp (on the -p port), quic (UDP port 443; quic://:PORT for another), unix:///PATH, dns (with --dns-zone); SSH clients always reach the server through "+controlDir+"/NAME.pipe")
		fs.StringVar(&o.quicCert, "quic-cert", "", "TLS certificate `file` (PEM) that quic shows; default: a self-signed one (cab's own handshake authenticates the peers)")
		fs.StringVar(&o.quicKey, "quic-key", "", "the private key `file` (PEM) of --quic-cert")
		fs.StringVar(&o.dnsZone, "dns-zone", "", "the `zone` the dns transport answers for, authoritatively (delegate it to this host with NS records)")
		fs.StringVar(&o.dnsListen, "dns-listen", ":53", "UDP and TCP `address` the dns transport answers on")
		fs.BoolVar(&o.dnsNoData, "dns-nodata", false, "answer NODATA, not NXDOMAIN, to the shortened names resolvers ask first: needed behind resolvers with strict QNAME minimisation, costs others more queries")
		fs.IntVar(&o.port, "p", cab.DefaultPort, "UDP and TCP `port` to listen on")
		fs.StringVar(&o.listen, "l", "", "`address` to listen on (default: all, IPv4 and IPv6)")
		fs.StringVar(&o.allowFile, "allow", "", "`file` of allowed client public keys, one per line with an optional name (default without --psk: STATE_DIR/clients.txt)")
		fs.DurationVar(&o.keepalive, "keepalive", cab.DefaultKeepalive, "clients' keepalive interval; a client silent for 3 intervals + 5s is down")
		fs.BoolVar(&o.vdeShared, "vde-shared-port", false, "with -s vde:DIR, put all clients on one switch port and let cab switch (default: a switch port per client)")
		fs.BoolVar(&o.isolate, "isolate", false, "do not forward frames between clients; a client cannot claim another's MAC")
		fs.DurationVar(&o.fdbAge, "fdb-age", 300*time.Second, "how long a learned MAC is remembered")
		fs.IntVar(&o.maxMACs, "max-macs", 1024, "most MACs learned behind one client")
		fs.IntVar(&o.floodRate, "flood-rate", cab.DefaultFloodRate, "most broadcast/multicast/unknown frames per second from one client (0: no limit)")
	} else {
		fs.StringVar(&o.serverKey, "server-key", "", "the server's public `key` (printed by the server at start; not needed with --psk alone)")
		fs.DurationVar(&o.keepalive, "keepalive", cab.DefaultKeepalive, "keepalive interval (keeps NAT mappings open)")
		fs.StringVar(&o.transports, "transport", "udp", "`list` of transports, tried in order when handshakes over one do not complete: udp, quic (the server's UDP port 443), quic://[HOST][:PORT], tcp, ssh://[USER@]HOST[:PORT], unix:///PATH, dns://ZONE (the last resort: through a DNS resolver)")
		fs.StringVar(&o.quicSNI, "quic-sni", "", "TLS server `name` that quic sends (default: the server's host name, none for an address)")
		fs.StringVar(&o.resolver, "resolver", "", "recursive `resolver` for dns:// transports: HOST[:PORT] (plain DNS), tls://HOST[:PORT] (DNS over TLS) or https://URL (DNS over HTTPS); default: the first nameserver in /etc/resolv.conf")
		fs.StringVar(&o.sshCommand, "ssh-command", "ssh -T -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3", "the ssh `command` and its options, for ssh:// transports")
		fs.StringVar(&o.sshRemote, "ssh-remote", "cab pipe", "the `command` ssh runs on the server's host (a forced-command key ignores it)")
	}
	fs.Usage = func() {
		if server {
			fmt.Fprintf(stderr, "Usage: cab server [flags]\n\nAccept clients and join them to the local port.\n\nFlags:\n")
		} else {
			fmt.Fprintf(stderr, "Usage: cab client [flags] HOST[:PORT]\n\nJoin the local port to the server at HOST (port %d by default).\n\nFlags:\n", cab.DefaultPort)
		}
		fs.PrintDefaults()
	}
	// Flags may come before and after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, err
			}
			return nil, nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if o.configFile != "" {
		o.setByFlag = map[string]bool{}
		fs.Visit(func(f *flag.Flag) { o.setByFlag[f.Name] = true })
		var err error
		if pos, err = o.applyFile(fs, server, pos); err != nil {
			return nil, nil, err
		}
	}
	return o, pos, nil
}

// applyFile reads the configuration file into o (where the command line
// said nothing) and checks its peers: a server's are the clients it
// accepts, a client's one is its server.
func (o *options) applyFile(fs *flag.FlagSet, server bool, pos []string) ([]string, error) {
	path := o.configFile
	role, line, err := fileRole(path)
	if err != nil {
		return nil, err
	}
	if role != "" && (role == "server") != server {
		return nil, configError(path, line, "role = %q, but this is cab %s: run cab %s -f %s, or cab run -f %s", role, map[bool]string{true: "server", false: "client"}[server], role, path, path)
	}
	peers, lines, err := applyConfigFile(fs, path)
	if err != nil {
		return nil, err
	}
	for i, p := range peers {
		at := func(k string) int {
			if l := p.line[k]; l > 0 {
				return l
			}
			return lines[i]
		}
		if p.PublicKey == "" && (server || o.pskFile == "" && p.PSK == "") {
			return nil, configError(path, lines[i], "[[peer]] %q has no public_key: add public_key = \"…\" (cab pubkey < its.key prints it)", p.Name)
		}
		var key crypto.PublicKey
		if p.PublicKey != "" { // a client with a PSK alone derives the server's key from it
			b, err := crypto.ParsePublicKey(p.PublicKey)
			if err != nil {
				return nil, configError(path, at("public_key"), "public_key: %v (cab pubkey < its.key prints one)", err)
			}
			key = b
		}
		pc := cab.PeerConfig{Name: p.Name, PublicKey: key, AllowedMACs: p.AllowedMACs, AllowedVLANs: p.AllowedVLANs}
		if p.Keepalive != "" {
			pc.Keepalive, _ = time.ParseDuration(p.Keepalive)
		}

		switch {
		case server && len(p.Endpoints) > 0:
			return nil, configError(path, max(at("endpoint"), at("endpoints")), "endpoint is for a client's [[peer]], its server: a server learns where its clients are")
		case server && p.Transport != "":
			return nil, configError(path, at("transport"), "transport in a server's [[peer]]: a server takes a client over any transport it listens on (set transport at the top)")
		case !server && i > 0:
			return nil, configError(path, lines[i], "a client has one [[peer]], its server; run one cab client per server")
		case !server:
			if o.serverKey == "" {
				o.serverKey = p.PublicKey
			}
			if o.pskFile == "" && p.PSK != "" {
				o.pskFile = p.PSK
			}
			if p.Transport != "" && !o.setByFlag["transport"] {
				o.transports = p.Transport
			}
			if len(pos) == 0 {
				pos = append(pos, p.Endpoints...)
			}
			if len(pos) == 0 && !strings.Contains(o.transports, "://") {
				return nil, configError(path, lines[i], "the server's [[peer]] has no endpoint: add endpoint = \"HOST:PORT\"")
			}
			o.serverName = p.Name
			o.serverPeer = pc
		default:
			o.peers = append(o.peers, pc)
			o.peerPSKs = append(o.peerPSKs, peerPSK{path: p.PSK, where: fmt.Sprintf("%s:%d", path, at("psk"))})
		}
	}
	return pos, nil
}

// stateDir returns the directory for generated keys.
func (o *options) stateDirPath() (string, error) {
	if o.stateDir != "" {
		return o.stateDir, nil
	}
	return stateDirFor(runtime.GOOS, os.Geteuid(), os.Getenv, os.UserHomeDir)
}

func newLogger(o *options, stderr io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" { // journald stamps lines itself
		hopts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(stderr, hopts))
	}
	return slog.New(slog.NewTextHandler(stderr, hopts))
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

func runCable(args []string, server bool, stdout, stderr io.Writer) error {
	o, pos, err := parseFlags(args, server, stderr)
	if err != nil {
		return err
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", o.logFormat)
	}
	log := newLogger(o, stderr)
	// Libraries that write with the log package (quic-go warns that way
	// of small UDP buffers) go through the same handler.
	slog.SetDefault(log)
	role := "client"
	if server {
		role = "server"
		if len(pos) != 0 {
			return fmt.Errorf("server: unexpected argument %q (the port is -p PORT)", pos[0])
		}
		if o.port < 0 || o.port > 65535 {
			return fmt.Errorf("server: -p %d: not a port number (0-65535)", o.port)
		}
	} else if len(pos) == 0 && !strings.Contains(o.transports, "://") {
		return fmt.Errorf("client: give the server's address, e.g. cab client 192.0.2.1:%d (more than one: tried in order)", cab.DefaultPort)
	}

	for _, f := range []struct{ name, v string }{{"udp-gso", o.udpGSO}, {"udp-gro", o.udpGRO}} {
		if f.v != "on" && f.v != "off" {
			return fmt.Errorf("--%s=%s: use on or off", f.name, f.v)
		}
	}
	if o.bpdu != "pass" && o.bpdu != "drop" {
		return fmt.Errorf("--bpdu=%s: use pass or drop", o.bpdu)
	}
	if err := checkName(o.name); err != nil {
		return err
	}
	cfg := cab.Config{Responder: server, Keepalive: o.keepalive, Isolate: o.isolate, Logger: log,
		FDBMaxAge: o.fdbAge, MaxMACs: o.maxMACs, FloodRate: o.floodRate, DropBPDU: o.bpdu == "drop"}
	if o.floodRate == 0 {
		cfg.FloodRate = -1
	}
	switch o.workers {
	case "auto":
	case "0":
		cfg.CryptoWorkers = -1
	default:
		n, err := strconv.Atoi(o.workers)
		if err != nil || n < 0 || n > 256 {
			return fmt.Errorf("--crypto-workers=%s: use auto or a number from 0 to 256", o.workers)
		}
		cfg.CryptoWorkers = n
	}
	switch o.mssClamp {
	case "auto":
	case "off":
		cfg.MSSClamp = -1
	default:
		n, err := strconv.Atoi(o.mssClamp)
		if err != nil || n < 536 || n > 65495 {
			return fmt.Errorf("--mss-clamp %q: use auto, off, or an MSS from 536 to 65495", o.mssClamp)
		}
		cfg.MSSClamp = n
	}
	if o.pskFile != "" {
		b, err := crypto.LoadKeyFile(o.pskFile)
		if err != nil {
			return fmt.Errorf("--psk: %w", err)
		}
		psk := crypto.Secret(b)
		cfg.PSK = &psk
	}

	// The static key.
	var notes []string
	switch {
	case o.keyFile != "":
		b, err := crypto.LoadKeyFile(o.keyFile)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		cfg.PrivateKey = crypto.PrivateKey(b)
	case server && cfg.PSK != nil:
		cfg.PrivateKey = crypto.PSKStatic(*cfg.PSK)
	default:
		dir, err := o.stateDirPath()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, role+".key")
		k, created, err := loadOrCreateKey(path)
		if err != nil {
			return err
		}
		cfg.PrivateKey = k
		if created {
			notes = append(notes, fmt.Sprintf("created the %s key %s", role, path))
		}
	}
	pub := cfg.PrivateKey.Public()
	if server {
		o.quicResetKey = quicResetKey(cfg.PrivateKey)
	}

	var addrs []string
	if !server {
		addrs = pos
	}
	tr, err := openTransports(o, server, addrs, log)
	if err != nil {
		return err
	}
	gso, gro := false, false
	if tr.udp != nil {
		gso, gro = tr.udp.Offload(o.udpGSO == "on", o.udpGRO == "on")
		if n := offloadNote(runtime.GOOS, o.setByFlag, o.udpGSO, o.udpGRO); n != "" {
			notes = append(notes, n)
		}
	}
	closeConn := true
	defer func() {
		if closeConn {
			tr.close()
		}
	}()

	if server {
		if err := o.loadPeerPSKs(); err != nil {
			return err
		}
		cfg.Peers = o.peers
		switch {
		case o.allowFile != "":
			af, err := cab.LoadAllowFile(o.allowFile, func(err error) { log.Warn("allow file not reloaded", "err", err) })
			if err != nil {
				return fmt.Errorf("--allow: %w", err)
			}
			cfg.Allow = af.Lookup
			notes = append(notes, fmt.Sprintf("%d client keys allowed by %s (edits take effect at once)", af.Len(), o.allowFile))
		case cfg.PSK == nil && len(o.peers) > 0:
			notes = append(notes, fmt.Sprintf("%d clients accepted, from the [[peer]] tables of %s", len(o.peers), o.configFile))
		case cfg.PSK != nil:
			cfg.AllowAny = true
			notes = append(notes, "any client holding the pre-shared key is accepted",
				fmt.Sprintf("on a client: cab client --psk %s THIS_HOST:%d", o.pskFile, o.port))
		default:
			dir, err := o.stateDirPath()
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
			af, err := cab.LoadAllowFile(path, func(err error) { log.Warn("allow file not reloaded", "err", err) })
			if err != nil {
				return err
			}
			cfg.Allow = af.Lookup
			notes = append(notes,
				fmt.Sprintf("on a client: cab client --server-key %s THIS_HOST:%d", pub, o.port),
				fmt.Sprintf("authorise a client: cab pubkey < client.key >> %s (%d allowed now; edits take effect at once)", path, af.Len()),
			)
		}
		if o.keyFile != "" || cfg.PSK == nil {
			notes = append([]string{fmt.Sprintf("server public key: %s", pub)}, notes...)
		}
	} else {
		var serverKey crypto.PublicKey
		switch {
		case o.serverKey != "":
			b, err := crypto.ParsePublicKey(o.serverKey)
			if err != nil {
				return fmt.Errorf("--server-key: %w", err)
			}
			serverKey = b
		case cfg.PSK != nil:
			serverKey = crypto.PSKStatic(*cfg.PSK).Public()
		default:
			return errors.New("client: give the server's public key (--server-key, printed by the server at start) or a pre-shared key (--psk)")
		}
		name := "server"
		if o.serverName != "" {
			name = o.serverName
		}
		sp := o.serverPeer
		sp.Name, sp.PublicKey, sp.Dial, sp.Fallback = name, serverKey, tr.dialers[0], tr.dialers[1:]
		cfg.Peers = []cab.PeerConfig{sp}
		if o.serverKey != "" {
			notes = append(notes, fmt.Sprintf("client public key: %s (the server must list it in its allow file)", pub))
		}
	}

	var port bridgeif.Port
	if dir, ok := strings.CutPrefix(o.spec, "vde:"); ok && server && !o.vdeShared {
		// A switch port per client, as vde_cryptcab does: the switch
		// sees each client on its own port.
		vdir, _, err := bridgeif.ParseVDESpec(dir)
		if err != nil {
			return fmt.Errorf("-s %s: %w", o.spec, err)
		}
		if _, err := os.Stat(filepath.Join(vdir, "ctl")); err != nil {
			return fmt.Errorf("-s %s: no vde_switch at %s (start one with vde_switch -d -s %s)", o.spec, vdir, vdir)
		}
		cfg.PortPerPeer = func(name string) (bridgeif.Port, error) {
			return bridgeif.OpenVDE(vdir, bridgeif.VDEOptions{Description: "cab client " + name, Logger: log})
		}
	} else {
		port, err = cab.OpenPort(o.spec, pub)
		if err != nil {
			return err
		}
	}
	c, err := cab.New(cfg, port, tr.conns)
	if err != nil {
		if port != nil {
			port.Close()
		}
		return err
	}
	closeConn = false
	w := bufio.NewWriter(stderr)
	for _, n := range notes {
		fmt.Fprintf(w, "cab: %s\n", n)
	}
	w.Flush()
	log.Info("cable up", "role", role, "port", o.spec, "transports", strings.Join(tr.names, ", "), "key", pub.Short(),
		"udp_gso", gso, "udp_gro", gro, "tap_offload", tapOffloads(port))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := setMTU(ctx, o.mtu, port, c, log); err != nil {
		c.Run(canceled())
		return err
	}
	if o.metrics != "" {
		if err := serveMetrics(ctx, o.metrics, c, log); err != nil {
			c.Run(canceled())
			return err
		}
	}
	sock := filepath.Join(controlDir, o.name+".sock")
	if ln, err := cab.ListenControl(sock); err != nil {
		log.Warn("no control socket: cab status will not see this cable", "err", err)
	} else {
		go c.ServeControl(ctx, ln)
		defer os.Remove(sock)
	}
	notify, err := newNotifier()
	if err != nil {
		log.Warn("no systemd notifications", "err", err)
	}
	rl := &reloader{args: args, server: server, cur: o, pos: pos, cable: c, psk: cfg.PSK, log: log, notify: notify}
	if !server {
		rl.client = cfg.Peers[0]
	}
	go rl.run(ctx)
	nctx, nstop := context.WithCancel(ctx)
	notified := make(chan struct{})
	go func() {
		notify.run(nctx, c)
		close(notified)
	}()
	err = c.Run(ctx)
	nstop()
	<-notified // STOPPING=1 is out
	if err != nil {
		return err
	}
	log.Info("cable down")
	return nil
}

// runFile runs the cable a configuration file describes: a server or a
// client as its role key says.
func runFile(args []string, stdout, stderr io.Writer) error {
	path := ""
	for i, a := range args {
		switch {
		case a == "-f" || a == "--f":
			if i+1 < len(args) {
				path = args[i+1]
			}
		case strings.HasPrefix(a, "-f="), strings.HasPrefix(a, "--f="):
			path = a[strings.Index(a, "=")+1:]
		}
	}
	if path == "" {
		fmt.Fprintln(stderr, "Usage: cab run -f FILE [flags]\n\nRun the server or client that FILE describes (its role key); flags win over the file.")
		return errUsage
	}
	role, _, err := fileRole(path)
	if err != nil {
		return err
	}
	if role == "" {
		return configError(path, 1, `no role: add role = "server" or role = "client"`)
	}
	return runCable(args, role == "server", stdout, stderr)
}

// checkName refuses instance names that are not plain file names.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || len(name) > 64 {
		return fmt.Errorf("--name %q: use a short plain name such as site-b", name)
	}
	return nil
}

// status prints the peers of a running cab.
func status(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cab status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "cab", "instance `name` (the --name it was started with)")
	socket := fs.String("socket", "", "control socket `path` (default "+controlDir+"/NAME.sock)")
	asJSON := fs.Bool("json", false, "print JSON")
	showFDB := fs.Bool("fdb", false, "print the MAC table")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
	}
	if err := checkName(*name); err != nil {
		return err
	}
	path := *socket
	if path == "" {
		path = filepath.Join(controlDir, *name+".sock")
	}
	cmd := "status"
	if *showFDB {
		cmd = "fdb"
	}
	st, fdb, err := cab.QueryControl(path, cmd)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if *showFDB {
			return enc.Encode(fdb)
		}
		return enc.Encode(st)
	}
	if *showFDB {
		printFDB(stdout, fdb)
		return nil
	}
	printStatus(stdout, st)
	return nil
}

func printFDB(w io.Writer, fdb []cab.FDBEntry) {
	sort.Slice(fdb, func(i, j int) bool {
		if fdb[i].Peer != fdb[j].Peer {
			return fdb[i].Peer < fdb[j].Peer
		}
		return fdb[i].MAC < fdb[j].MAC
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tVLAN\tPEER\tAGE")
	for _, e := range fdb {
		peer := e.Peer
		if peer == "" {
			peer = "(local)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.MAC, e.VLAN, peer, e.Age.Round(time.Second))
	}
	tw.Flush()
}

func printStatus(w io.Writer, st *cab.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tKEY\tSTATE\tADDR\tTRANSPORT\tUP SINCE\tHANDSHAKE\tRX FRAMES\tRX BYTES\tTX FRAMES\tTX BYTES\tMACS\tDROPS")
	now := time.Now()
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	for _, p := range st.Peers {
		state := "down"
		if p.Up {
			state = "up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n",
			p.Name, p.PublicKey[:8], state, dash(p.Addr), transportCell(p), ago(p.UpSince), ago(p.LastHandshake),
			p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.MACs, dropString(p.Drops))
	}
	tw.Flush()
	for _, p := range st.Peers {
		if ps := p.Path; ps != nil {
			fmt.Fprintf(w, "%s over %s: %.1f queries/s, %.1f%% lost, rtt %v, %d queries\n",
				p.Name, dash(p.Transport), ps.QueriesPerSecond, 100*ps.Loss, ps.RTT.Round(100*time.Microsecond), ps.Queries)
		}
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "dropped before a peer was known: %s\n", dropString(st.Drops))
	}
	fmt.Fprintf(w, "MAC table: %d entries\n", st.FDB)
}

// transportCell is the TRANSPORT column: the transport, and its
// round-trip time when it measures one ("quic rtt=1.2ms").
func transportCell(p cab.PeerStatus) string {
	if p.RTT > 0 && p.Transport != "" {
		return p.Transport + " rtt=" + p.RTT.Round(10*time.Microsecond).String()
	}
	return dash(p.Transport)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dropString(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// plug joins stdin/stdout, in vde_plug's stream format, to the port spec,
// without crypto: a drop-in for vde_plug on either side of a dpipe. It ends
// with nil on end of stdin.
func plug(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cab plug", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cab plug SPEC\n\nJoin stdin/stdout (vde_plug's stream format) to the port SPEC:\ntap:NAME or vde:DIR[N]. Example: dpipe vde_plug /tmp/swA = ssh B cab plug vde:/tmp/swB\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		return errors.New("plug: give one port, e.g. cab plug vde:/tmp/sw")
	}
	if fs.Arg(0) == "stdio" {
		return errors.New("plug: stdio to stdio makes no cable: give tap:NAME or vde:DIR")
	}
	var id crypto.PublicKey
	port, err := cab.OpenPort(fs.Arg(0), id)
	if err != nil {
		return err
	}
	stdio, err := cab.OpenStdio()
	if err != nil {
		port.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return cab.Splice(ctx, port, stdio)
}

// canceled returns a context that is done already.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// setMTU applies --mtu to a TAP port: a number once, auto now and whenever
// the paths to the peers change.
func setMTU(ctx context.Context, spec string, port bridgeif.Port, c *cab.Cable, log *slog.Logger) error {
	if spec == "" {
		return nil
	}
	tap, ok := port.(*bridgeif.TAP)
	if !ok {
		return fmt.Errorf("--mtu: only a TAP that is in no bridge has an MTU to set (a bridge takes the smallest MTU of its members)")
	}
	if spec != "auto" {
		n, err := strconv.Atoi(spec)
		if err != nil || n < int(cab.MinL3MTU) || n > int(cab.MaxL3MTU) {
			return fmt.Errorf("--mtu %q: use auto or a number from %d to %d", spec, cab.MinL3MTU, cab.MaxL3MTU)
		}
		return tap.SetMTU(n)
	}
	follow := func() int {
		mtu := int(c.FrameMTU().L3(0))
		if cur, err := tap.MTU(); err == nil && cur != mtu {
			if err := tap.SetMTU(mtu); err != nil {
				log.Warn("cannot set the TAP's MTU", "err", err)
			} else {
				log.Info("tap mtu", "mtu", mtu)
			}
		}
		return mtu
	}
	follow()
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				follow()
			}
		}
	}()
	return nil
}

// tapOffloads names the offloads of a TAP port, for the log: "off" for a
// TAP without them, "" for other ports.
func tapOffloads(port any) string {
	if t, ok := port.(interface{ Offloads() string }); ok {
		if s := t.Offloads(); s != "" {
			return s
		}
		return "off"
	}
	return ""
}
