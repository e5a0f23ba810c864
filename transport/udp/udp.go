// Package udp is cab's default carrier: one UDP socket, dual-stack unless
// bound to an IPv4 address, with batched reads and writes (recvmmsg and
// sendmmsg through golang.org/x/net) and large socket buffers.
package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"cab/transport"
)

// Addr is a UDP address. IPv4 addresses are always unmapped, so the same
// remote end is always the same Addr.
type Addr struct{ netip.AddrPort }

var _ transport.Addr = Addr{}

// socketBuffer is the send and receive buffer size asked for.
const socketBuffer = 7 << 20

// Conn is a UDP socket that implements transport.Conn.
type Conn struct {
	pc    *net.UDPConn
	bc    *ipv6.PacketConn // batch I/O; ipv6's works for both families on Linux
	v4    bool             // bound to IPv4 only
	local netip.AddrPort

	rmsgs []ipv6.Message // the single reader's
	wpool sync.Pool      // *[]ipv6.Message for concurrent writers

	sendErrors atomic.Uint64
}

var _ transport.Conn = (*Conn)(nil)

// Listen opens a UDP socket bound to addr ("host:port", ":port"). With an
// empty host it listens on every address, IPv4 and IPv6.
func Listen(addr string) (*Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	network := "udp"
	ip, perr := netip.ParseAddr(host)
	v4 := perr == nil && ip.Unmap().Is4()
	if v4 {
		network = "udp4"
	}
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	pc, err := net.ListenUDP(network, la)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen udp %s: address already in use", addr)
		}
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	setBuffers(pc)
	setDontFragment(pc)
	c := &Conn{pc: pc, bc: ipv6.NewPacketConn(pc), v4: v4 || pc.LocalAddr().(*net.UDPAddr).IP.To4() != nil && host != ""}
	c.local = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	c.local = netip.AddrPortFrom(c.local.Addr().Unmap(), c.local.Port())
	c.wpool.New = func() any { m := make([]ipv6.Message, 0, 64); return &m }
	return c, nil
}

// setBuffers asks for large socket buffers, beyond the sysctl limits when
// privileged.
func setBuffers(pc *net.UDPConn) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{syscall.SO_RCVBUFFORCE, syscall.SO_RCVBUF}, {syscall.SO_SNDBUFFORCE, syscall.SO_SNDBUF}} {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[0], socketBuffer) != nil {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[1], socketBuffer)
			}
		}
	})
}

// setDontFragment sets DF on the socket's datagrams: cab cuts what does not
// fit the path into fragments of its own, so nothing is fragmented behind
// its back, and the kernel learns the path MTU from ICMP too-big.
func setDontFragment(pc *net.UDPConn) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
	})
}

// PathMTU returns the largest UDP payload that reaches a without
// fragmentation, as the kernel knows it (the route's MTU, lowered by ICMP
// too-big messages), or 0 when it cannot tell.
func (c *Conn) PathMTU(ta transport.Addr) int {
	a, ok := ta.(Addr)
	if !ok {
		return 0
	}
	network, level, opt, hdr := "udp4", unix.IPPROTO_IP, unix.IP_MTU, 20+8
	if !a.Addr().Is4() {
		network, level, opt, hdr = "udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU, 40+8
	}
	probe, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(a.AddrPort))
	if err != nil {
		return 0
	}
	defer probe.Close()
	rc, err := probe.SyscallConn()
	if err != nil {
		return 0
	}
	mtu := 0
	rc.Control(func(fd uintptr) { mtu, _ = unix.GetsockoptInt(int(fd), level, opt) })
	if mtu <= hdr {
		return 0
	}
	return mtu - hdr
}

// LocalAddr returns the address the socket is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Scheme names the transport.
func (c *Conn) Scheme() string { return "udp" }

// SendErrors counts packets the kernel refused to send (no route, buffer
// full, a firewall): they are lost packets, not errors.
func (c *Conn) SendErrors() uint64 { return c.sendErrors.Load() }

// Resolve resolves hostport to an Addr this conn can send to.
func (c *Conn) Resolve(ctx context.Context, hostport string) (Addr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	pn, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return Addr{}, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		if c.v4 && !ip.Is4() {
			continue
		}
		return Addr{netip.AddrPortFrom(ip, uint16(pn))}, nil
	}
	return Addr{}, fmt.Errorf("resolve %s: no IPv4 address for an IPv4 socket", hostport)
}

// MaxPacket is the largest UDP payload over IPv4.
func (c *Conn) MaxPacket() int { return 65507 }

// ReadBatch implements transport.Conn.
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) {
	if cap(c.rmsgs) < len(ps) {
		c.rmsgs = make([]ipv6.Message, len(ps))
		for i := range c.rmsgs {
			c.rmsgs[i].Buffers = make([][]byte, 1)
		}
	}
	msgs := c.rmsgs[:len(ps)]
	for i := range msgs {
		msgs[i].Buffers[0] = ps[i].B[:cap(ps[i].B)]
		msgs[i].N, msgs[i].Flags = 0, 0
	}
	for {
		n, err := c.bc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0, net.ErrClosed
			}
			if transient(err) {
				continue
			}
			return 0, fmt.Errorf("udp read: %w", err)
		}
		out := 0
		for i := 0; i < n; i++ {
			m := &msgs[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.Flags&syscall.MSG_TRUNC != 0 {
				continue // truncated: longer than the caller's buffer
			}
			ap := ua.AddrPort()
			if out != i { // close the gap left by a dropped packet
				ps[out].B, ps[i].B = ps[i].B, ps[out].B
			}
			ps[out].B = ps[out].B[:m.N]
			ps[out].Addr = Addr{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
			out++
		}
		if out > 0 {
			return out, nil
		}
	}
}

// transient reports errors that lose one packet but leave the socket fine.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMSGSIZE) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)
}

// WriteBatch implements transport.Conn.
func (c *Conn) WriteBatch(ps []transport.Packet) error {
	mp := c.wpool.Get().(*[]ipv6.Message)
	defer c.wpool.Put(mp)
	msgs := (*mp)[:0]
	var tooBig error
	for _, p := range ps {
		if len(p.B) > c.MaxPacket() {
			tooBig = &transport.TooBigError{Len: len(p.B), Max: c.MaxPacket()}
			continue
		}
		a, ok := p.Addr.(Addr)
		if !ok {
			return fmt.Errorf("udp write: addr %v is not a udp.Addr", p.Addr)
		}
		ip := a.Addr()
		if !c.v4 && ip.Is4() {
			ip = netip.AddrFrom16(ip.As16())
		}
		var m ipv6.Message
		if len(msgs) < cap(msgs) {
			m = msgs[:len(msgs)+1][len(msgs)]
		}
		if m.Buffers == nil {
			m.Buffers = make([][]byte, 1)
		}
		m.Buffers[0] = p.B
		m.Addr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, a.Port()))
		msgs = append(msgs, m)
	}
	for len(msgs) > 0 {
		n, err := c.bc.WriteBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			// One packet failed: count it as lost and go on with the rest.
			c.sendErrors.Add(1)
			n++
		}
		msgs = msgs[min(n, len(msgs)):]
	}
	*mp = (*mp)[:0]
	return tooBig
}

// Close implements transport.Conn.
func (c *Conn) Close() error { return c.pc.Close() }
