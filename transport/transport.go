// Package transport defines Conn, the carrier of sealed cab packets, and the
// helpers that every transport shares. A Conn looks like a lossy datagram
// socket with return addresses, whatever carries it underneath (UDP, a TCP
// stream, QUIC, DNS); the cable never looks below this interface.
package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// An Addr names a remote end within one Conn: a UDP address, an accepted
// stream, a DNS-tunnel client. Addrs are comparable with == (they are used as
// map keys) and cheap to copy.
type Addr interface {
	String() string
}

// A Packet is one sealed cab packet and the Addr it came from or goes to.
type Packet struct {
	B    []byte
	Addr Addr
}

// A Conn carries packets to and from many remote Addrs. It never looks inside
// a packet.
//
// ReadBatch blocks until at least one packet has arrived, then for i < n reads
// packet i into ps[i].B[:cap(ps[i].B)], reslices ps[i].B to the packet's
// length and sets ps[i].Addr. The caller owns the buffers; the Conn keeps no
// reference to them after ReadBatch returns. A packet longer than the buffer
// is dropped. Only one ReadBatch may run at a time.
//
// WriteBatch sends each ps[i].B to ps[i].Addr and keeps no reference to the
// buffers after it returns. Losing a packet is not an error: WriteBatch fails
// only when the Conn is closed or a packet is longer than MaxPacket (then with
// *TooBigError, and the rest of the batch is still sent). WriteBatch may be
// called from several goroutines at once, concurrently with ReadBatch.
//
// MaxPacket is the largest packet WriteBatch accepts. After Close, ReadBatch
// and WriteBatch return net.ErrClosed (possibly wrapped).
type Conn interface {
	ReadBatch(ps []Packet) (n int, err error)
	WriteBatch(ps []Packet) error
	MaxPacket() int
	Close() error
}

// TooBigError reports a packet longer than the Conn's MaxPacket.
type TooBigError struct {
	Len, Max int
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("transport: packet of %d bytes exceeds the maximum of %d", e.Len, e.Max)
}

// ReadQueued is ReadBatch for a conn whose receivers queue the packets
// they take on rx: it waits for one packet (or for closed, then it returns
// net.ErrClosed), then takes what else is queued, up to len(ps). A packet
// longer than its buffer is dropped. release, when set, gets each queued
// packet's buffer back once it has been copied or dropped.
func ReadQueued(rx <-chan Packet, closed <-chan struct{}, ps []Packet, release func([]byte)) (int, error) {
	n := 0
	for n < len(ps) {
		var p Packet
		if n == 0 {
			select {
			case p = <-rx:
			case <-closed:
				return 0, net.ErrClosed
			}
		} else {
			select {
			case p = <-rx:
			default:
				return n, nil
			}
		}
		if len(p.B) <= cap(ps[n].B) {
			ps[n].B = append(ps[n].B[:0], p.B...)
			ps[n].Addr = p.Addr
			n++
		}
		if release != nil {
			release(p.B)
		}
	}
	return n, nil
}

// IsClosed reports, without blocking, whether ch is closed: the carriers
// close a channel to say they are shutting down.
func IsClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Wake signals ch without blocking: a loop that waits on a channel of
// capacity 1 is woken once, however often Wake is called before it runs.
func Wake(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// CheckUDPReach asks the kernel whether anything listens on UDP at ap: it
// sends an empty datagram from a connected socket of its own and waits up
// to wait for an error. An ICMP port unreachable comes back as an error
// wrapping syscall.ECONNREFUSED: nothing listens there. nil means no such
// report came: something listens, or the path drops the probe or the ICMP
// error.
func CheckUDPReach(ap netip.AddrPort, wait time.Duration) error {
	probe, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer probe.Close()
	probe.SetDeadline(time.Now().Add(wait))
	if _, err := probe.Write(nil); err != nil {
		return err
	}
	var b [1]byte
	_, err = probe.Read(b[:])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}
