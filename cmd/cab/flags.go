package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"cab"
)

// parseFlags reads the settings of a server or client from its arguments:
// the flags, the server addresses (a client's arguments, before and after
// the flags), and the configuration file of -f, which the flags given
// override. The settings come back checked for the role.
func parseFlags(args []string, server bool, stderr io.Writer) (*cab.Settings, error) {
	role := "client"
	if server {
		role = "server"
	}
	s := cab.DefaultSettings()
	pos, err := parseArgs(newFlagSet(s, server, stderr), args)
	if err != nil {
		return nil, err
	}
	if s.File != "" {
		// The file first, then the flags given over it.
		fs, err := cab.ParseFile(s.File)
		if err != nil {
			return nil, err
		}
		if _, err := parseArgs(newFlagSet(fs, server, io.Discard), args); err != nil {
			return nil, err
		}
		s = fs
	}
	s.Servers = pos
	if err := s.Check(role); err != nil {
		return nil, err
	}
	return s, nil
}

// parseArgs parses args with fs, flags before and after the positional
// arguments, which it returns.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newFlagSet makes the flags of a server or client, each setting a field of
// s, with what s holds as its default. The file key of each flag is its
// name with underscores (cab.Keys).
func newFlagSet(s *cab.Settings, server bool, stderr io.Writer) *flag.FlagSet {
	name := "client"
	if server {
		name = "server"
	}
	fs := flag.NewFlagSet("cab "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(localFlag{s}, "s", "local port: tap:NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=off][,carrier=follow|on], vde:DIR[N] or stdio; "+
		"repeat it as -s NAME=SPEC[,psk=FILE][,isolate] for named segments, each with its own port (then the local port is only what -s SPEC gives)")
	fs.StringVar(&s.PSK, "psk", s.PSK, "pre-shared key `file` (from cab genkey); alone it is enough for a two-site link")
	fs.StringVar(&s.Key, "key", s.Key, "private key `file` (default: STATE_DIR/"+name+".key, created on first run)")
	fs.StringVar(&s.StateDir, "state-dir", s.StateDir, "state `directory` (default "+cab.StateDirHelp()+")")
	fs.BoolVar(&s.Verbose, "v", s.Verbose, "log debug messages")
	fs.StringVar(&s.Name, "name", s.Name, "instance `name`: the control socket is "+controlDir+"/NAME.sock")
	fs.StringVar(&s.LogFormat, "log-format", s.LogFormat, "log format: text or json")
	fs.StringVar(&s.BPDU, "bpdu", s.BPDU, "spanning-tree BPDUs: pass or drop")
	fs.StringVar(&s.MTU, "mtu", s.MTU, "MTU of a TAP that is in no bridge: auto (follow the largest that crosses without fragments) or a number; default: leave it (1500)")
	fs.StringVar(&s.MSSClamp, "mss-clamp", s.MSSClamp, "TCP MSS clamping of SYNs entering and leaving the cable: auto, off, or the IPv4 MSS")
	fs.DurationVar(&s.DeadAfter, "dead-after", s.DeadAfter, fmt.Sprintf("fast failure detection: a peer silent this long while asked is down (%v to %v); asks go out after a third of it without a packet heard, about 4 packets a second in all at 1s; 0: the default detection", cab.MinDeadAfter, cab.MaxDeadAfter))
	fs.StringVar(&s.File, "f", s.File, "configuration `file` (TOML; flags given here win over it)")
	fs.StringVar(&s.Metrics, "metrics", s.Metrics, "serve Prometheus metrics at http://`ADDR`/metrics (e.g. 127.0.0.1:9667)")
	fs.StringVar(&s.UDPGSO, "udp-gso", s.UDPGSO, "UDP segmentation offload (one send for a run of packets), where the kernel has it: on or off")
	fs.StringVar(&s.UDPGRO, "udp-gro", s.UDPGRO, "UDP receive offload (the kernel glues datagrams), where the kernel has it: on or off")
	fs.StringVar(&s.Workers, "crypto-workers", s.Workers, "goroutines that help seal and open large batches, frames kept in order: auto (one fewer than the cores from 4 cores up, none below) or a number (0: none)")
	fs.StringVar(&s.QUICALPN, "quic-alpn", s.QUICALPN, "TLS application `protocol` that quic offers; both ends must agree (h3 looks like HTTP/3)")
	fs.IntVar(&s.FloodRate, "flood-rate", s.FloodRate, "most broadcast/multicast/unknown frames per second from the local port, and on a server from each client; the rest is dropped before it is sealed or copied (0: no limit)")
	if server {
		serverFlags(fs, s)
	} else {
		clientFlags(fs, s)
	}
	fs.Usage = func() {
		if server {
			fmt.Fprintf(stderr, "Usage: cab server [flags]\n\nAccept clients and join them to the local port.\n\nFlags:\n")
		} else {
			fmt.Fprintf(stderr, "Usage: cab client [flags] HOST[:PORT]\n\nJoin the local port to the server at HOST (port %d by default).\n\nFlags:\n", cab.DefaultPort)
		}
		fs.PrintDefaults()
	}
	return fs
}

func serverFlags(fs *flag.FlagSet, s *cab.Settings) {
	fs.StringVar(&s.Transport, "transport", s.Transport, "`list` of transports to listen on, comma-separated: udp, tcp (on the -p port), quic (UDP port 443; quic://:PORT for another), unix:///PATH, dns (with --dns-zone); SSH clients always reach the server through "+controlDir+"/NAME.pipe")
	fs.StringVar(&s.QUICCert, "quic-cert", s.QUICCert, "TLS certificate `file` (PEM) that quic shows; default: a self-signed one (cab's own handshake authenticates the peers)")
	fs.StringVar(&s.QUICKey, "quic-key", s.QUICKey, "the private key `file` (PEM) of --quic-cert")
	fs.StringVar(&s.DNSZone, "dns-zone", s.DNSZone, "the `zone` the dns transport answers for, authoritatively (delegate it to this host with NS records)")
	fs.StringVar(&s.DNSListen, "dns-listen", s.DNSListen, "UDP and TCP `address` the dns transport answers on")
	fs.BoolVar(&s.DNSNoData, "dns-nodata", s.DNSNoData, "answer NODATA, not NXDOMAIN, to the shortened names resolvers ask first: needed behind resolvers with strict QNAME minimisation, costs others more queries")
	fs.IntVar(&s.ListenPort, "p", s.ListenPort, "UDP and TCP `port` to listen on")
	fs.StringVar(&s.Listen, "l", s.Listen, "`address` to listen on (default: all, IPv4 and IPv6)")
	fs.StringVar(&s.Allow, "allow", s.Allow, "`file` of allowed client public keys, one per line with an optional name (default without --psk: STATE_DIR/clients.txt)")
	fs.DurationVar(&s.Keepalive, "keepalive", s.Keepalive, "clients' keepalive interval; a client silent for 3 intervals + 5s is down")
	fs.BoolVar(&s.VDESharedPort, "vde-shared-port", s.VDESharedPort, "with -s vde:DIR, put all clients on one switch port and let cab switch (default: a switch port per client)")
	fs.BoolVar(&s.Isolate, "isolate", s.Isolate, "do not forward frames between clients; a client cannot claim another's MAC")
	fs.BoolVar(&s.AllowAnyPSK, "allow-any-psk", s.AllowAnyPSK, "with [[peer]] tables and --psk, accept any client holding the PSK too (default: the tables' clients only)")
	fs.DurationVar(&s.FDBAge, "fdb-age", s.FDBAge, "how long a learned MAC is remembered")
	fs.IntVar(&s.MaxMACs, "max-macs", s.MaxMACs, "most MACs learned behind one client")
	fs.IntVar(&s.FloodBudget, "flood-budget", s.FloodBudget, "most copies of flooded frames per second (frames × the clients and port each goes to), shared fairly among the clients (0: no limit)")
}

func clientFlags(fs *flag.FlagSet, s *cab.Settings) {
	fs.StringVar(&s.ServerKey, "server-key", s.ServerKey, "the server's public `key` (printed by the server at start; not needed with --psk alone)")
	fs.DurationVar(&s.Keepalive, "keepalive", s.Keepalive, "keepalive interval (keeps NAT mappings open)")
	fs.StringVar(&s.Transport, "transport", s.Transport, "`list` of transports, tried in order when handshakes over one do not complete: udp, quic (the server's UDP port 443), quic://[HOST][:PORT], tcp, ssh://[USER@]HOST[:PORT], unix:///PATH, dns://ZONE (the last resort: through a DNS resolver)")
	fs.StringVar(&s.QUICSNI, "quic-sni", s.QUICSNI, "TLS server `name` that quic sends (default: the server's host name, none for an address)")
	fs.StringVar(&s.Resolver, "resolver", s.Resolver, "recursive `resolver` for dns:// transports: HOST[:PORT] (plain DNS), tls://HOST[:PORT] (DNS over TLS) or https://URL (DNS over HTTPS); default: the first nameserver in /etc/resolv.conf")
	fs.StringVar(&s.SSHCommand, "ssh-command", s.SSHCommand, "the ssh `command` and its options, for ssh:// transports")
	fs.StringVar(&s.SSHRemote, "ssh-remote", s.SSHRemote, "the `command` ssh runs on the server's host (a forced-command key ignores it)")
}

// localFlag is -s: the local port, or with NAME= a named segment.
type localFlag struct{ s *cab.Settings }

func (f localFlag) String() string {
	if f.s == nil {
		return ""
	}
	return f.s.Local
}

func (f localFlag) Set(v string) error { return f.s.SetLocal(v) }

func (f localFlag) Get() any { return f.s.Local }
