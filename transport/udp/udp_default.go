//go:build !linux

package udp

import (
	"fmt"
	"net"
	"syscall"

	"cab/transport"
)

// sys is the portable I/O state of a Conn: one packet per system call.
type sys struct {
	rbuf []byte // the single reader's, big enough for any datagram
}

func (c *Conn) init() {
	c.rbuf = make([]byte, 1<<16)
	c.pc.SetReadBuffer(socketBuffer)
	c.pc.SetWriteBuffer(socketBuffer)
}

// control runs on the socket before it is bound; nothing to do here.
func control(syscall.RawConn) error { return nil }

// PathMTU returns 0: this platform does not tell.
func (c *Conn) PathMTU(transport.Addr) int { return 0 }

// ReadBatch implements transport.Conn with one read, so it returns one
// packet. A packet longer than ps[0].B's capacity is dropped.
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("udp read: %w", net.ErrClosed)
	}
	if len(ps) == 0 {
		return 0, nil
	}
	retries := 0
	for {
		n, ap, err := c.pc.ReadFromUDPAddrPort(c.rbuf)
		if err != nil {
			if err := c.readError(err, &retries); err != nil {
				return 0, err
			}
			continue
		}
		if n > cap(ps[0].B) {
			continue // longer than the caller's buffer
		}
		ps[0].B = append(ps[0].B[:0], c.rbuf[:n]...)
		ps[0].Addr = AddrFrom(ap)
		return 1, nil
	}
}

// WriteBatch implements transport.Conn with one write per packet. A packet
// the kernel refuses is lost and counted in SendErrors.
func (c *Conn) WriteBatch(ps []transport.Packet) error {
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

// Offload reports both off: this platform has neither UDP GSO nor GRO.
func (c *Conn) Offload(gso, gro bool) (gsoOn, groOn bool) { return false, false }

// OffloadStats reports none.
func (c *Conn) OffloadStats() (gsoPackets, groDatagrams uint64) { return 0, 0 }
