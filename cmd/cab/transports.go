package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"cab"
	"cab/crypto"
	"cab/transport"
	"cab/transport/dnstun"
	"cab/transport/quic"
	"cab/transport/stream"
	"cab/transport/udp"
)

// transports is what openTransports opened: the conns the cable reads, the
// UDP one among them (for its offloads), and for a client the ways to reach
// the server, preferred first.
type transports struct {
	conns   []transport.Conn
	udp     *udp.Conn
	dialers []*cab.Dialer
	names   []string
}

func (t *transports) close() {
	for _, c := range t.conns {
		c.Close()
	}
}

// openTransports opens the --transport list: listeners for a server (and
// always the pipe socket that `cab pipe` reaches over SSH), dialers for a
// client, which dials each of addrs (HOST[:PORT]) over udp, then each over
// quic (port 443), then each over tcp, and so on down the list.
func openTransports(o *options, server bool, addrs []string, log *slog.Logger) (*transports, error) {
	t := &transports{}
	fail := func(err error) (*transports, error) {
		t.close()
		return nil, err
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(o.transports, ",") {
		item = strings.TrimSpace(item)
		scheme, rest, hasRest := strings.Cut(item, "://")
		if !hasRest {
			scheme = item
		}
		if seen[item] {
			return fail(fmt.Errorf("--transport: %q twice", item))
		}
		seen[item] = true
		switch {
		case scheme == "udp" && !hasRest:
			c, err := cab.ListenUDP(o.listen, o.port)
			if err != nil {
				return fail(err)
			}
			t.udp = c
			t.add(c, "udp "+c.LocalAddr().String())
			if !server {
				if len(addrs) == 0 {
					return fail(fmt.Errorf("client: udp needs the server's address, e.g. cab client 192.0.2.1:%d", cab.DefaultPort))
				}
				for _, addr := range addrs {
					d, err := cab.UDPDialer(c, addr)
					if err != nil {
						return fail(err)
					}
					t.dialers = append(t.dialers, d)
				}
			}
		case scheme == "tcp" && !hasRest:
			if server {
				s, err := stream.ListenTCP(net.JoinHostPort(o.listen, strconv.Itoa(o.port)))
				if err != nil {
					return fail(fmt.Errorf("%w (is another cab running? pick another port with -p)", err))
				}
				t.add(s, "tcp "+s.Addr().String())
				continue
			}
			if len(addrs) == 0 {
				return fail(fmt.Errorf("client: tcp needs the server's address, e.g. cab client --transport tcp 192.0.2.1:%d", cab.DefaultPort))
			}
			for _, addr := range addrs {
				hp := cab.WithDefaultPort(addr)
				if _, _, err := net.SplitHostPort(hp); err != nil {
					return fail(fmt.Errorf("server address %q: %w", addr, err))
				}
				t.addClient(stream.DialTCP(hp))
			}
		case scheme == "quic":
			if err := t.openQUIC(o, server, addrs, item, rest, hasRest, log); err != nil {
				return fail(err)
			}
		case scheme == "unix" && hasRest:
			path := rest
			if !strings.HasPrefix(path, "/") {
				return fail(fmt.Errorf("--transport %s: use unix:///ABSOLUTE/PATH", item))
			}
			if server {
				s, err := stream.ListenUnix(path)
				if err != nil {
					return fail(err)
				}
				t.add(s, "unix "+path)
			} else {
				t.addClient(stream.DialUnix(path))
			}
		case scheme == "dns" && server:
			zone := o.dnsZone
			if hasRest {
				zone = rest
			}
			if zone == "" {
				return fail(fmt.Errorf("--transport dns: give the zone the server answers for, e.g. --dns-zone t.example.com (delegated to this host by NS records)"))
			}
			if _, err := dnstun.CanonicalZone(zone); err != nil {
				return fail(fmt.Errorf("--dns-zone: %w", err))
			}
			s, err := dnstun.Listen(o.dnsListen, zone, log)
			if err != nil {
				return fail(fmt.Errorf("%w (another name server on the port? pick another with --dns-listen ADDR)", err))
			}
			s.SetNoData(o.dnsNoData)
			t.add(s, "dns "+s.LocalAddr().String()+" zone "+zone)
		case scheme == "dns" && !server:
			if !hasRest || rest == "" {
				return fail(fmt.Errorf("--transport dns: give the tunnel's zone, e.g. --transport dns://t.example.com"))
			}
			resolver := o.resolver
			if resolver == "" {
				r, err := dnstun.SystemResolver()
				if err != nil {
					return fail(err)
				}
				resolver = r
			}
			c, err := dnstun.Dial(rest, resolver, log)
			if err != nil {
				return fail(err)
			}
			t.add(c, "dns://"+rest+" via "+resolver)
			t.dialers = append(t.dialers, &cab.Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return c.Remote(), nil }})
		case scheme == "ssh" && hasRest && !server:
			argv, err := sshArgv(o, item)
			if err != nil {
				return fail(err)
			}
			t.addClient(stream.DialCommand("ssh", rest, argv[0], argv[1:]...))
		default:
			if server {
				return fail(fmt.Errorf("--transport %q: a server listens on udp, quic[://[HOST]:PORT], tcp, dns (with --dns-zone) and unix:///PATH (SSH clients come through the pipe socket)", item))
			}
			return fail(fmt.Errorf("--transport %q: use udp, quic[://[HOST][:PORT]], tcp, ssh://[USER@]HOST[:PORT], unix:///PATH or dns://ZONE", item))
		}
	}
	switch hasDNS := seen["dns"] || strings.Contains(o.transports, "dns://"); {
	case server && o.dnsZone != "" && !hasDNS:
		return fail(fmt.Errorf("--dns-zone %s: add dns to --transport (e.g. --transport udp,dns) for the server to answer for it", o.dnsZone))
	case !server && o.resolver != "" && !hasDNS:
		return fail(fmt.Errorf("--resolver %s: only dns://ZONE transports use it; add one to --transport (e.g. --transport udp,dns://t.example.com)", o.resolver))
	}
	if server {
		// The far end of ssh:// transports: `cab pipe` joins an SSH
		// session's stdio to this socket.
		os.MkdirAll(controlDir, 0o755)
		if s, err := stream.ListenPipe(pipeSocket(o.name)); err != nil {
			lvl := slog.LevelWarn
			if errors.Is(err, os.ErrPermission) {
				lvl = slog.LevelDebug // not root: no SSH clients, as expected
			}
			log.Log(context.Background(), lvl, "no pipe socket: clients cannot come in over ssh", "err", err)
		} else {
			t.add(s, "ssh "+pipeSocket(o.name))
		}
	}
	if len(t.conns) == 0 {
		return fail(fmt.Errorf("--transport %q: nothing to listen on", o.transports))
	}
	return t, nil
}

// openQUIC opens a quic transport item. A server listens on UDP port 443
// (quic) or the one given (quic://[HOST]:PORT); a client dials each
// server address's host on port 443, or on PORT (quic://:PORT), or the
// one server the item names (quic://HOST[:PORT]).
func (t *transports) openQUIC(o *options, server bool, addrs []string, item, rest string, hasRest bool, log *slog.Logger) error {
	host, port := "", quic.DefaultPort
	if hasRest {
		h, p, err := net.SplitHostPort(rest)
		if err != nil {
			h = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
		} else {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n > 65535 || n == 0 && !server {
				return fmt.Errorf("--transport %q: %q is not a port (1-65535); use quic://[HOST]:PORT", item, p)
			}
			port = n
		}
		if strings.ContainsAny(h, "/?#@") {
			return fmt.Errorf("--transport %q: use quic://[HOST][:PORT]", item)
		}
		host = h
	}
	if server {
		if host == "" {
			host = o.listen
		}
		s, err := quic.Listen(net.JoinHostPort(host, strconv.Itoa(port)), quic.ServerConfig{CertFile: o.quicCert, KeyFile: o.quicKey, ALPN: o.quicALPN, ResetKey: o.quicResetKey})
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w (UDP port %d needs root or CAP_NET_BIND_SERVICE; or pick a port above 1023 with quic://:PORT)", err, port)
		}
		if err != nil {
			return fmt.Errorf("%w (is another process on UDP port %d? a server on both udp and quic needs two ports: quic listens on %d unless given as quic://:PORT)", err, port, quic.DefaultPort)
		}
		t.add(s, "quic "+s.Addr().String())
		return nil
	}
	var targets []string
	if host != "" {
		targets = []string{net.JoinHostPort(host, strconv.Itoa(port))}
	} else {
		if len(addrs) == 0 {
			return fmt.Errorf("client: %s needs the server's address, e.g. cab client --transport %s 192.0.2.1, or --transport quic://192.0.2.1:%d", item, item, port)
		}
		for _, addr := range addrs {
			h, _, err := net.SplitHostPort(addr)
			if err != nil {
				h = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
			}
			if h == "" {
				return fmt.Errorf("server address %q: no host", addr)
			}
			targets = append(targets, net.JoinHostPort(h, strconv.Itoa(port)))
		}
	}
	for _, target := range targets {
		c, err := quic.Dial(target, quic.ClientConfig{ALPN: o.quicALPN, ServerName: o.quicSNI, KeepAlive: o.keepalive, Logger: log})
		if err != nil {
			return err
		}
		remote := c.Remote()
		t.add(c, remote.String())
		t.dialers = append(t.dialers, &cab.Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return remote, nil }})
	}
	return nil
}

// quicResetKey derives a server's QUIC stateless reset key from its cab
// private key: the same after a restart, and telling nothing of the key.
func quicResetKey(k crypto.PrivateKey) *[32]byte {
	b, err := hkdf.Key(sha256.New, k[:], nil, "cab quic stateless reset key", 32)
	if err != nil {
		panic(err) // only for a length sha256 cannot give
	}
	return (*[32]byte)(b)
}

func (t *transports) add(c transport.Conn, name string) {
	t.conns = append(t.conns, c)
	t.names = append(t.names, name)
}

func (t *transports) addClient(c *stream.Client) {
	t.add(c, c.Remote().String())
	remote := c.Remote()
	t.dialers = append(t.dialers, &cab.Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return remote, nil }})
}

// sshArgv is the command line that reaches the server for an
// ssh://[USER@]HOST[:PORT] transport: --ssh-command, the port, the
// destination, and --ssh-remote.
func sshArgv(o *options, item string) ([]string, error) {
	u, err := url.Parse(item)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--transport %q: use ssh://[USER@]HOST[:PORT]", item)
	}
	argv := strings.Fields(o.sshCommand)
	if len(argv) == 0 {
		return nil, fmt.Errorf("--ssh-command is empty")
	}
	if p := u.Port(); p != "" {
		argv = append(argv, "-p", p)
	}
	dest := u.Hostname()
	if u.User != nil {
		dest = u.User.Username() + "@" + dest
	}
	argv = append(argv, "--", dest)
	return append(argv, strings.Fields(o.sshRemote)...), nil
}
