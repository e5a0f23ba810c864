// Package udp is cab's default carrier: one UDP socket, dual-stack unless
// bound to an address, with large socket buffers and, on Linux, batched
// reads and writes (recvmmsg and sendmmsg through golang.org/x/net).
//
// Losing a packet is not an error. A packet the kernel refuses to send
// (ENOBUFS when the send queue is full, EHOSTUNREACH, ENETUNREACH,
// ECONNREFUSED, EPERM from a firewall, EMSGSIZE when it exceeds the path
// MTU, or any other error that concerns that packet alone) is lost and
// counted in SendErrors; the rest of its batch is still sent. On the read
// side, errors that concern one packet (an ICMP error queued on the socket)
// are skipped and the read goes on.
package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"cab/transport"
)

// Addr is a UDP address. IPv4 addresses are always stored unmapped (never
// ::ffff:a.b.c.d), so the same remote end is always the same Addr and Addrs
// can be compared with == and used as map keys.
type Addr struct{ netip.AddrPort }

var (
	_ transport.Addr   = Addr{}
	_ transport.Hoster = Addr{}
)

// Host returns the IP address of the Addr.
func (a Addr) Host() netip.Addr { return a.AddrPort.Addr().Unmap() }

// AddrFrom returns ap as an Addr, unmapping an IPv4-mapped IPv6 address.
func AddrFrom(ap netip.AddrPort) Addr {
	return Addr{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
}

// socketBuffer is the send and receive buffer size asked for.
const socketBuffer = 7 << 20

// The largest UDP payloads: 65535 less the IPv4 header (20) and the UDP
// header (8), and 65535 less the UDP header alone for IPv6, whose payload
// length does not count its fixed header.
const (
	maxPacket4 = 65535 - 20 - 8
	maxPacket6 = 65535 - 8
)

// stack is the address families a socket reaches.
type stack uint8

const (
	stack4    stack = iota // IPv4 only
	stack6                 // IPv6 only (bound to an IPv6 address)
	stackDual              // IPv6 socket that also carries IPv4
)

// Conn is a UDP socket that implements transport.Conn. ReadBatch may run
// concurrently with any number of WriteBatch calls.
type Conn struct {
	pc    *net.UDPConn
	stack stack
	local netip.AddrPort

	closed     atomic.Bool
	sendErrors atomic.Uint64

	sys // the platform's batch I/O state
}

var (
	_ transport.Conn         = (*Conn)(nil)
	_ transport.Schemer      = (*Conn)(nil)
	_ transport.PathMTUer    = (*Conn)(nil)
	_ transport.ReachChecker = (*Conn)(nil)
	_ transport.QueueDelayer = (*Conn)(nil)
)

// Listen opens a UDP socket bound to addr ("host:port", ":port", "[::]:0",
// "0.0.0.0:7667"). With an empty host, or "::", the socket is dual-stack (an
// IPv6 socket with IPV6_V6ONLY off that also carries IPv4), falling back to
// IPv4 only when the host has no IPv6. An IPv4 host gives an IPv4-only
// socket. Listen asks for 7 MiB socket buffers, beyond the sysctl limits
// when privileged. A port already taken gives an error that says "address
// already in use" (errors.Is syscall.EADDRINUSE).
func Listen(addr string) (*Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	network := "udp"
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().Is4() {
		network = "udp4"
	}
	pc, family, err := listen(network, addr)
	if err != nil && host == "" && errors.Is(err, syscall.EAFNOSUPPORT) {
		pc, family, err = listen("udp4", net.JoinHostPort("0.0.0.0", port))
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen udp %s: %w", addr, syscall.EADDRINUSE)
		}
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	c := &Conn{pc: pc, local: AddrFrom(local).AddrPort}
	switch {
	case family == "udp4":
		c.stack = stack4
	case local.Addr().IsUnspecified():
		c.stack = stackDual
	default:
		c.stack = stack6
	}
	c.init()
	return c, nil
}

// listen opens the socket and reports the family the system chose,
// "udp4" or "udp6".
func listen(network, addr string) (*net.UDPConn, string, error) {
	var family string
	lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
		family = network
		return control(rc)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, "", err
	}
	return pc.(*net.UDPConn), family, nil
}

// LocalAddr returns the address the socket is bound to; a dual-stack
// socket's is [::]:port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Scheme names the transport.
func (c *Conn) Scheme() string { return "udp" }

// SendErrors counts the packets the kernel refused to send (no route, full
// buffers, a firewall, too big for the path): lost packets, not errors.
func (c *Conn) SendErrors() uint64 { return c.sendErrors.Load() }

// MaxPacket returns the largest UDP payload the socket can send: 65507
// bytes over IPv4 and on a dual-stack socket, 65527 bytes on an IPv6-only
// socket. What reaches the far end without fragmentation is less: see
// PathMTU.
func (c *Conn) MaxPacket() int {
	if c.stack == stack6 {
		return maxPacket6
	}
	return maxPacket4
}

// Resolve resolves hostport ("host:port": a host name, an IPv4 address, an
// IPv6 address in brackets; the port a number or a service name) to an Addr
// this conn can send to: an IPv4 address for an IPv4-only conn, an IPv6
// address for an IPv6-only one, the resolver's first choice otherwise.
func (c *Conn) Resolve(ctx context.Context, hostport string) (Addr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	pn, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	if pn == 0 {
		return Addr{}, fmt.Errorf("resolve %s: port 0", hostport)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	for _, ip := range ips {
		a := AddrFrom(netip.AddrPortFrom(ip, uint16(pn)))
		if c.reaches(a) {
			return a, nil
		}
	}
	want := "IPv4"
	if c.stack == stack6 {
		want = "IPv6"
	}
	return Addr{}, fmt.Errorf("resolve %s: no %s address for an %s-only socket", hostport, want, want)
}

// reaches reports whether the socket's family can send to a.
func (c *Conn) reaches(a Addr) bool {
	switch c.stack {
	case stack4:
		return a.Addr().Unmap().Is4()
	case stack6:
		return !a.Addr().Unmap().Is4()
	}
	return a.IsValid()
}

// reachWait is how long CheckReach waits for an ICMP error.
const reachWait = 500 * time.Millisecond

// CheckReach asks the kernel whether anything listens at a: it sends an
// empty datagram from a connected socket of its own and waits up to half a
// second for an error. An ICMP port unreachable comes back as an error
// wrapping syscall.ECONNREFUSED: nothing listens there. nil means no such
// report came: something listens, or the path drops the probe or the ICMP
// error. A server that listens counts the empty datagram as a runt.
func (c *Conn) CheckReach(ta transport.Addr) error {
	a, ok := ta.(Addr)
	if !ok {
		return nil
	}
	return transport.CheckUDPReach(a.AddrPort, reachWait)
}

// Close closes the socket; a blocked ReadBatch returns net.ErrClosed, and so
// do ReadBatch and WriteBatch from then on.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.pc.Close()
}

// maxReadRetries bounds the per-packet read errors skipped in a row before
// ReadBatch reports one, so that a socket in a persistent error state
// cannot spin forever.
const maxReadRetries = 100

// transient reports errors that concern one packet and leave the socket
// fine: the packet is lost.
func transient(err error) bool {
	for _, e := range []error{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
		syscall.ENOBUFS, syscall.EPERM, syscall.EMSGSIZE, syscall.EAGAIN, syscall.EINTR,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	for _, e := range transientOS {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// readError turns a failed socket read into what ReadBatch returns: nil to
// read again (a transient error, fewer than maxReadRetries in a row),
// net.ErrClosed, or the wrapped error.
func (c *Conn) readError(err error, retries *int) error {
	if errors.Is(err, net.ErrClosed) || c.closed.Load() {
		return fmt.Errorf("udp read: %w", net.ErrClosed)
	}
	if transient(err) && *retries < maxReadRetries {
		*retries++
		return nil
	}
	return fmt.Errorf("udp read: %w", err)
}

// check returns the Addr of a packet that may be sent. A packet that never
// can (too big, a foreign Addr) is skipped and sets *err unless an earlier
// one did; one to an address family the socket cannot carry is lost and
// counted in SendErrors.
func (c *Conn) check(p *transport.Packet, err *error) (Addr, bool) {
	if len(p.B) > c.MaxPacket() {
		if *err == nil {
			*err = &transport.TooBigError{Len: len(p.B), Max: c.MaxPacket()}
		}
		return Addr{}, false
	}
	a, ok := p.Addr.(Addr)
	if !ok {
		if *err == nil {
			*err = fmt.Errorf("udp write: addr %v (%T) is not a udp.Addr", p.Addr, p.Addr)
		}
		return Addr{}, false
	}
	if !c.reaches(a) {
		c.sendErrors.Add(1) // an address family the socket cannot carry
		return Addr{}, false
	}
	return a, true
}
