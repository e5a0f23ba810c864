package cab

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
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"cab/crypto"
	"cab/transport"
	"cab/transport/dnstun"
	"cab/transport/quic"
	"cab/transport/stream"
	"cab/transport/udp"
)

// Carriers is what OpenCarriers opened: the conns the cable reads, the UDP
// one among them (for its offloads), and for a client the ways to reach the
// server, preferred first.
type Carriers struct {
	Conns   []transport.Conn
	UDP     *udp.Conn
	Dialers []*Dialer
	Names   []string // for the log: "udp [::]:7667", "tcp://192.0.2.1:7667"…
}

// Close closes every conn.
func (t *Carriers) Close() {
	for _, c := range t.Conns {
		c.Close()
	}
}

// OpenCarriers opens the carriers of s.Transport, every URL scheme a cable
// moves packets over: listeners for a server (and always the pipe socket
// that `cab pipe` reaches over SSH), dialers for a client, which dials each
// of s.Servers (HOST[:PORT]) over udp, then each over quic (port 443), then
// each over tcp, and so on down the list:
//
//	udp                      the default
//	tcp                      2-byte framing, the server's -p port
//	quic[://[HOST][:PORT]]   RFC 9221 datagrams, port 443 unless given
//	unix:///PATH             a unix stream socket
//	ssh://[USER@]HOST[:PORT] a client's: ssh runs `cab pipe` on the server's host
//	dns (server), dns://ZONE (client)  the DNS tunnel
func OpenCarriers(s *Settings, log *slog.Logger) (*Carriers, error) {
	if log == nil {
		log = slog.Default()
	}
	o := &carrierOpener{s: s, log: log, server: s.Role == "server", t: &Carriers{}}
	if err := o.open(); err != nil {
		o.t.Close()
		return nil, err
	}
	return o.t, nil
}

// carrierOpener opens the carriers of one Settings into t.
type carrierOpener struct {
	s      *Settings
	log    *slog.Logger
	server bool
	t      *Carriers
}

func (o *carrierOpener) open() error {
	s, seen := o.s, map[string]bool{}
	for _, item := range strings.Split(s.Transport, ",") {
		item = strings.TrimSpace(item)
		if seen[item] {
			return fmt.Errorf("--transport: %q twice", item)
		}
		seen[item] = true
		if err := o.openItem(item); err != nil {
			return err
		}
	}
	switch hasDNS := seen["dns"] || strings.Contains(s.Transport, "dns://"); {
	case o.server && s.DNSZone != "" && !hasDNS:
		return fmt.Errorf("--dns-zone %s: add dns to --transport (e.g. --transport udp,dns) for the server to answer for it", s.DNSZone)
	case !o.server && s.Resolver != "" && !hasDNS:
		return fmt.Errorf("--resolver %s: only dns://ZONE transports use it; add one to --transport (e.g. --transport udp,dns://t.example.com)", s.Resolver)
	}
	if o.server {
		o.openPipe()
	}
	if len(o.t.Conns) == 0 {
		return fmt.Errorf("--transport %q: nothing to listen on", s.Transport)
	}
	return nil
}

// openItem opens one item of the list.
func (o *carrierOpener) openItem(item string) error {
	scheme, rest, hasRest := strings.Cut(item, "://")
	if !hasRest {
		scheme = item
	}
	switch {
	case scheme == "udp" && !hasRest:
		return o.openUDP()
	case scheme == "tcp" && !hasRest:
		return o.openTCP()
	case scheme == "quic":
		return o.openQUIC(item, rest, hasRest)
	case scheme == "unix" && hasRest:
		if !strings.HasPrefix(rest, "/") {
			return fmt.Errorf("--transport %s: use unix:///ABSOLUTE/PATH", item)
		}
		if !o.server {
			o.t.addClient(stream.DialUnix(rest))
			return nil
		}
		c, err := stream.ListenUnix(rest)
		if err != nil {
			return err
		}
		o.t.add(c, "unix "+rest)
		return nil
	case scheme == "dns" && o.server:
		zone := o.s.DNSZone
		if hasRest {
			zone = rest
		}
		return o.listenDNS(zone)
	case scheme == "dns":
		if !hasRest || rest == "" {
			return fmt.Errorf("--transport dns: give the tunnel's zone, e.g. --transport dns://t.example.com")
		}
		return o.dialDNS(rest)
	case scheme == "ssh" && hasRest && !o.server:
		argv, err := sshArgv(o.s, item)
		if err != nil {
			return err
		}
		o.t.addClient(stream.DialCommand("ssh", rest, argv[0], argv[1:]...))
		return nil
	case o.server:
		return fmt.Errorf("--transport %q: a server listens on udp, quic[://[HOST]:PORT], tcp, dns (with --dns-zone) and unix:///PATH (SSH clients come through the pipe socket)", item)
	}
	return fmt.Errorf("--transport %q: use udp, quic[://[HOST][:PORT]], tcp, ssh://[USER@]HOST[:PORT], unix:///PATH or dns://ZONE", item)
}

// openUDP opens the UDP conn: a server's on its port, a client's on any,
// with a dialer per server address.
func (o *carrierOpener) openUDP() error {
	listen, port := o.s.Listen, o.s.ListenPort
	if !o.server {
		port = 0 // a client sends from any port
	}
	c, err := ListenUDP(listen, port)
	if err != nil {
		return err
	}
	o.t.UDP = c
	o.t.add(c, "udp "+c.LocalAddr().String())
	if o.server {
		return nil
	}
	if len(o.s.Servers) == 0 {
		return fmt.Errorf("client: udp needs the server's address, e.g. cab client 192.0.2.1:%d", DefaultPort)
	}
	for _, addr := range o.s.Servers {
		d, err := UDPDialer(c, addr)
		if err != nil {
			return err
		}
		o.t.Dialers = append(o.t.Dialers, d)
	}
	return nil
}

// openTCP listens on the server's port, or dials each server address.
func (o *carrierOpener) openTCP() error {
	if o.server {
		c, err := stream.ListenTCP(net.JoinHostPort(o.s.Listen, strconv.Itoa(o.s.ListenPort)))
		if err != nil {
			return fmt.Errorf("%w (is another cab running? pick another port with -p)", err)
		}
		o.t.add(c, "tcp "+c.Addr().String())
		return nil
	}
	if len(o.s.Servers) == 0 {
		return fmt.Errorf("client: tcp needs the server's address, e.g. cab client --transport tcp 192.0.2.1:%d", DefaultPort)
	}
	for _, addr := range o.s.Servers {
		hp := WithDefaultPort(addr)
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return fmt.Errorf("server address %q: %w", addr, err)
		}
		o.t.addClient(stream.DialTCP(hp))
	}
	return nil
}

// listenDNS starts the server's name server for zone.
func (o *carrierOpener) listenDNS(zone string) error {
	if zone == "" {
		return fmt.Errorf("--transport dns: give the zone the server answers for, e.g. --dns-zone t.example.com (delegated to this host by NS records)")
	}
	if _, err := dnstun.CanonicalZone(zone); err != nil {
		return fmt.Errorf("--dns-zone: %w", err)
	}
	c, err := dnstun.Listen(o.s.DNSListen, zone, o.log)
	if err != nil {
		return fmt.Errorf("%w (another name server on the port? pick another with --dns-listen ADDR)", err)
	}
	c.SetNoData(o.s.DNSNoData)
	o.t.add(c, "dns "+c.LocalAddr().String()+" zone "+zone)
	return nil
}

// dialDNS opens a client's tunnel through the resolver to zone. When the
// resolver cannot be reached yet (no route, no nameserver in
// /etc/resolv.conf) and carriers come before this one, they start without
// it, and it is opened when its turn comes.
func (o *carrierOpener) dialDNS(zone string) error {
	resolver := o.s.Resolver
	dial := func() (transport.Conn, transport.Addr, error) {
		r := o.s.Resolver
		if r == "" {
			sr, err := dnstun.SystemResolver()
			if err != nil {
				return nil, nil, notYet{err}
			}
			r = sr
		}
		resolver = r
		c, err := dialDNS(zone, r, o.log)
		var oe *net.OpError
		if errors.As(err, &oe) {
			return nil, nil, notYet{err}
		}
		if err != nil {
			return nil, nil, err
		}
		return c, c.Remote(), nil
	}
	c, remote, err := dial()
	var ny notYet
	if errors.As(err, &ny) && len(o.t.Dialers) > 0 {
		o.log.Warn("a carrier cannot start yet; the ones before it start, and it is tried again in its turn", "carrier", "dns://"+zone, "err", err)
		lc := newLazyConn("dns", dnstun.MaxPacket, dial)
		o.t.add(lc, "dns://"+zone+" (not started yet)")
		o.t.Dialers = append(o.t.Dialers, &Dialer{Conn: lc, Resolve: lc.resolve})
		return nil
	}
	if err != nil {
		return err
	}
	o.t.add(c, "dns://"+zone+" via "+resolver)
	o.t.Dialers = append(o.t.Dialers, &Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return remote, nil }})
	return nil
}

// dialDNS is dnstun.Dial; tests replace it.
var dialDNS = func(zone, resolver string, log *slog.Logger) (interface {
	transport.Conn
	Remote() transport.Addr
}, error) {
	c, err := dnstun.Dial(zone, resolver, log)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// notYet is an error that may go away: a carrier that cannot start yet.
type notYet struct{ error }

func (e notYet) Unwrap() error { return e.error }

// openPipe opens a server's pipe socket, the far end of ssh:// carriers:
// `cab pipe` joins an SSH session's stdio to it.
func (o *carrierOpener) openPipe() {
	os.MkdirAll(RunDir, 0o755)
	path := PipeSocket(o.s.Name)
	c, err := stream.ListenPipe(path)
	if err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, os.ErrPermission) {
			lvl = slog.LevelDebug // not root: no SSH clients, as expected
		}
		o.log.Log(context.Background(), lvl, "no pipe socket: clients cannot come in over ssh", "err", err)
		return
	}
	o.t.add(c, "ssh "+path)
}

// quicGCPercent is the garbage collector's target (GOGC) of a cab that
// carries QUIC: quic-go copies every datagram into fresh memory three
// times (sending, parsing, queueing it), and collecting that at Go's
// default of 100 held the carrier back. In `make bench`, 400 gave TCP
// over QUIC 9 to 15 % more, for a peak RSS of 47 MB instead of 27.
const quicGCPercent = 400

var quicGC sync.Once

// gcForQUIC sets the garbage collector's target to quicGCPercent unless the
// operator chose one in GOGC (lookup is os.LookupEnv); it reports whether
// it did.
func gcForQUIC(lookup func(string) (string, bool)) bool {
	if _, set := lookup("GOGC"); set {
		return false
	}
	debug.SetGCPercent(quicGCPercent)
	return true
}

// openQUIC opens a quic item. A server listens on UDP port 443 (quic) or
// the one given (quic://[HOST]:PORT); a client dials each server
// address's host on port 443, or on PORT (quic://:PORT), or the one server
// the item names (quic://HOST[:PORT]).
func (o *carrierOpener) openQUIC(item, rest string, hasRest bool) error {
	host, port, err := quicHostPort(item, rest, hasRest, o.server)
	if err != nil {
		return err
	}
	quicGC.Do(func() { gcForQUIC(os.LookupEnv) })
	s := o.s
	if o.server {
		if host == "" {
			host = s.Listen
		}
		c, err := quic.Listen(net.JoinHostPort(host, strconv.Itoa(port)), quic.ServerConfig{CertFile: s.QUICCert, KeyFile: s.QUICKey, ALPN: s.QUICALPN, ResetKey: s.quicResetKey})
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w (UDP port %d needs root or CAP_NET_BIND_SERVICE; or pick a port above 1023 with quic://:PORT)", err, port)
		}
		if err != nil {
			return fmt.Errorf("%w (is another process on UDP port %d? a server on both udp and quic needs two ports: quic listens on %d unless given as quic://:PORT)", err, port, quic.DefaultPort)
		}
		o.t.add(c, "quic "+c.Addr().String())
		return nil
	}
	targets := []string{net.JoinHostPort(host, strconv.Itoa(port))}
	if host == "" {
		if len(s.Servers) == 0 {
			return fmt.Errorf("client: %s needs the server's address, e.g. cab client --transport %s 192.0.2.1, or --transport quic://192.0.2.1:%d", item, item, port)
		}
		targets = nil
		for _, addr := range s.Servers {
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
		c, err := quic.Dial(target, quic.ClientConfig{ALPN: s.QUICALPN, ServerName: s.QUICSNI, KeepAlive: s.Keepalive, Logger: o.log})
		if err != nil {
			return err
		}
		remote := c.Remote()
		o.t.add(c, remote.String())
		o.t.Dialers = append(o.t.Dialers, &Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return remote, nil }})
	}
	return nil
}

// quicHostPort reads quic://[HOST][:PORT]: port 443 unless given.
func quicHostPort(item, rest string, hasRest, server bool) (string, int, error) {
	if !hasRest {
		return "", quic.DefaultPort, nil
	}
	port := quic.DefaultPort
	h, p, err := net.SplitHostPort(rest)
	if err != nil {
		h = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	} else {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 || n == 0 && !server {
			return "", 0, fmt.Errorf("--transport %q: %q is not a port (1-65535); use quic://[HOST]:PORT", item, p)
		}
		port = n
	}
	if strings.ContainsAny(h, "/?#@") {
		return "", 0, fmt.Errorf("--transport %q: use quic://[HOST][:PORT]", item)
	}
	return h, port, nil
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

func (t *Carriers) add(c transport.Conn, name string) {
	t.Conns = append(t.Conns, c)
	t.Names = append(t.Names, name)
}

func (t *Carriers) addClient(c *stream.Client) {
	t.add(c, c.Remote().String())
	remote := c.Remote()
	t.Dialers = append(t.Dialers, &Dialer{Conn: c, Resolve: func() (transport.Addr, error) { return remote, nil }})
}

// sshArgv is the command line that reaches the server for an
// ssh://[USER@]HOST[:PORT] transport: --ssh-command, the port, the
// destination, and --ssh-remote.
func sshArgv(s *Settings, item string) ([]string, error) {
	u, err := url.Parse(item)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--transport %q: use ssh://[USER@]HOST[:PORT]", item)
	}
	argv := strings.Fields(s.SSHCommand)
	if len(argv) == 0 {
		return nil, fmt.Errorf("--ssh-command is empty")
	}
	if o := sshCiphers(crypto.LocalCiphers()[0] == crypto.CipherAES256GCM); o != "" && !choosesCipher(argv[1:]) {
		argv = append(argv, "-o", o)
	}
	if p := u.Port(); p != "" {
		argv = append(argv, "-p", p)
	}
	dest := u.Hostname()
	if u.User != nil {
		dest = u.User.Username() + "@" + dest
	}
	argv = append(argv, "--", dest)
	return append(argv, strings.Fields(s.SSHRemote)...), nil
}

// sshCiphers is the cipher preference cab gives ssh, "" for ssh's own. On
// a CPU with AES instructions the AES-GCM ciphers come first: OpenSSH's
// default list starts with chacha20-poly1305, which costs about twice the
// CPU per byte there. The rest of OpenSSH's default list follows, so any
// server still finds one it takes.
func sshCiphers(aes bool) string {
	if !aes {
		return ""
	}
	return "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
}

// choosesCipher reports whether the ssh options args choose the cipher
// already (-c LIST, -o Ciphers=LIST, -oCiphers LIST, -Tc LIST...): cab's
// preference must not override the user's. ssh parses its options with
// getopt: a cluster of letters ends at the first one that takes an
// argument, which is the rest of the word or the next word.
func choosesCipher(args []string) bool {
	const withArg = "BbcDEeFIiJLlmOoPpQRSWw"
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return false // ssh's options end here
		}
		for j := 1; j < len(a); j++ {
			f := a[j]
			if f == 'c' {
				return true
			}
			if strings.IndexByte(withArg, f) < 0 {
				continue
			}
			arg := a[j+1:]
			if arg == "" && i+1 < len(args) {
				i++
				arg = args[i]
			}
			if f == 'o' {
				k, _, _ := strings.Cut(strings.TrimSpace(arg), "=")
				if k, _, _ = strings.Cut(k, " "); strings.EqualFold(strings.TrimSpace(k), "ciphers") {
					return true
				}
			}
			break
		}
	}
	return false
}

// ListenUDP opens the UDP conn a cable sends and receives on. An empty host
// listens on every address, IPv4 and IPv6.
func ListenUDP(host string, port int) (*udp.Conn, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	c, err := udp.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("%w (is another cab running? pick another port with -p)", err)
	}
	return c, nil
}

// UDPDialer returns a Dialer that reaches hostport over conn, resolving the
// name anew before every handshake. A hostport without a port gets
// DefaultPort.
func UDPDialer(conn *udp.Conn, hostport string) (*Dialer, error) {
	hostport = WithDefaultPort(hostport)
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return nil, fmt.Errorf("server address %q: %w", hostport, err)
	}
	return &Dialer{
		Conn: conn,
		Resolve: func() (transport.Addr, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a, err := conn.Resolve(ctx, hostport)
			if err != nil {
				return nil, err
			}
			return a, nil
		},
	}, nil
}
