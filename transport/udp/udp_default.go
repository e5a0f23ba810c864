//go:build !linux

package udp

import (
	"time"

	"cab/transport"
)

// Verified: compiled for freebsd, darwin and windows (amd64, arm64) by make
// cross; not run there. What it calls, readOne and writeEach, runs on
// Linux in udp_portable_test.go.

// sys is the portable I/O state of a Conn: one packet per system call.
type sys struct {
	rbuf []byte   // the single reader's, big enough for any datagram
	last lastAddr // the single reader's
}

func (c *Conn) init() {
	c.rbuf = make([]byte, 1<<16)
	c.pc.SetReadBuffer(socketBuffer)
	c.pc.SetWriteBuffer(socketBuffer)
}

// QueueDelay returns 0: this platform does not tell.
func (c *Conn) QueueDelay() time.Duration { return 0 }

// PathMTU returns 0: this platform does not tell.
func (c *Conn) PathMTU(transport.Addr) int { return 0 }

// ReadBatch implements transport.Conn with one read, so it returns one
// packet. A packet longer than ps[0].B's capacity is dropped.
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) { return c.readOne(ps, c.rbuf, &c.last) }

// WriteBatch implements transport.Conn with one write per packet. A packet
// the kernel refuses is lost and counted in SendErrors.
func (c *Conn) WriteBatch(ps []transport.Packet) error { return c.writeEach(ps) }

// Offload reports both off: this platform has neither UDP GSO nor GRO.
func (c *Conn) Offload(gso, gro bool) (gsoOn, groOn bool) { return false, false }

// OffloadStats reports none.
func (c *Conn) OffloadStats() (gsoPackets, groDatagrams uint64) { return 0, 0 }
