package udp

import (
	"fmt"
	"net"
	"net/netip"

	"cab/transport"
)

// The portable path: one datagram per system call, through the net
// package alone. Systems without recvmmsg and sendmmsg use it for
// ReadBatch and WriteBatch (udp_default.go); on Linux it runs in the tests
// (udp_portable_test.go), so that it is proven where cab is run.

// lastAddr keeps the Addr of the last datagram read, so that a run of
// datagrams from one sender makes one transport.Addr, not one each.
type lastAddr struct {
	ap netip.AddrPort
	a  transport.Addr
}

func (l *lastAddr) of(ap netip.AddrPort) transport.Addr {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if l.a == nil || ap != l.ap {
		l.ap, l.a = ap, Addr{ap}
	}
	return l.a
}

// readOne reads one datagram into rbuf, big enough for any, and copies it
// into ps[0].B; it returns 1. A datagram longer than ps[0].B's capacity is
// dropped and the next one read. Only one readOne may run at a time, with
// its own last. It allocates nothing while the sender stays the same.
func (c *Conn) readOne(ps []transport.Packet, rbuf []byte, last *lastAddr) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("udp read: %w", net.ErrClosed)
	}
	if len(ps) == 0 {
		return 0, nil
	}
	retries := 0
	for {
		n, ap, err := c.pc.ReadFromUDPAddrPort(rbuf)
		if err != nil {
			if err := c.readError(err, &retries); err != nil {
				return 0, err
			}
			continue
		}
		if n > cap(ps[0].B) {
			continue // longer than the caller's buffer
		}
		ps[0].B = append(ps[0].B[:0], rbuf[:n]...)
		ps[0].Addr = last.of(ap)
		return 1, nil
	}
}

// writeEach writes ps with one system call per packet. A packet the
// kernel refuses is lost and counted in SendErrors; one that can never be
// sent is skipped, and the first of those is the error.
func (c *Conn) writeEach(ps []transport.Packet) error {
	if c.closed.Load() {
		return fmt.Errorf("udp write: %w", net.ErrClosed)
	}
	var err error
	for i := range ps {
		a, ok := c.check(&ps[i], &err)
		if !ok {
			continue
		}
		if _, werr := c.pc.WriteToUDPAddrPort(ps[i].B, a.AddrPort); werr != nil {
			if c.closed.Load() {
				return fmt.Errorf("udp write: %w", net.ErrClosed)
			}
			c.sendErrors.Add(1)
		}
	}
	return err
}
