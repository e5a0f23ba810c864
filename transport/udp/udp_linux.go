package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"cab/transport"
)

// Verified: run on Linux by udp_test.go and udp_linux_test.go over
// loopback (recvmmsg/sendmmsg, GSO, GRO, path MTU).

// transientOS are the errors of this system, beyond transient's, that
// concern one packet: none.
var transientOS []error

// batchConn is the batch I/O of ipv4.PacketConn and ipv6.PacketConn; their
// Message types are one and the same.
type batchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

var _ batchConn = (*ipv4.PacketConn)(nil)

// sys is the Linux batch I/O state of a Conn.
type sys struct {
	bc batchConn

	// The single reader's: its recvmmsg state, the Addr of the last
	// packet read, so that a run of packets from one sender costs no
	// allocation, and how long the oldest packet of the last ReadBatch
	// waited (from the kernel's receive timestamp).
	rd       reader
	lastAP   netip.AddrPort
	lastAddr transport.Addr
	delay    time.Duration

	wpool sync.Pool // *writer, for concurrent writers

	gso atomic.Bool // send runs of equal packets to one address as one UDP_SEGMENT datagram
	gro atomic.Bool // the kernel may glue received datagrams (UDP_GRO)

	// GRO reads land in the reader's own 64 KiB buffers, and are cut into
	// the caller's packets from there, across calls when need be.
	gbufs   [][]byte
	gstamps []int64 // the kernel's receive time of each, unix nanoseconds (0: none)
	gn, gi  int     // messages read, and the next one to cut
	gpos    int     // offset of the next packet in message gi
	gsize   int     // its segment size
	segs    atomic.Uint64
	glued   atomic.Uint64
}

// writer is the state of one WriteBatch: its messages, each with its own
// *net.UDPAddr, and the buffers and control messages of UDP_SEGMENT runs.
type writer struct {
	msgs []ipv6.Message
	runs [][]byte // one 64 KiB buffer per run of packets glued for GSO
	oobs [][]byte // the UDP_SEGMENT control message of each run
	pkts []int    // packets in each message
}

func (c *Conn) init() {
	if c.stack == stack4 {
		c.bc = ipv4.NewPacketConn(c.pc)
	} else {
		c.bc = ipv6.NewPacketConn(c.pc)
	}
	c.wpool.New = func() any { return new(writer) }
	c.gso.Store(c.probeGSO())
}

// Offload turns UDP GSO (one system call sends a run of equal packets to one
// address) and UDP GRO (the kernel glues received datagrams of one sender)
// on where the kernel has them, or off, and reports what is on.
func (c *Conn) Offload(gso, gro bool) (gsoOn, groOn bool) {
	c.gso.Store(gso && c.probeGSO())
	if gro != c.gro.Load() {
		v := 0
		if gro {
			v = 1
		}
		var err error
		rc, rerr := c.pc.SyscallConn()
		if rerr == nil {
			rerr = rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, v) })
		}
		if rerr == nil && err == nil {
			c.gro.Store(gro)
		}
	}
	return c.gso.Load(), c.gro.Load()
}

// OffloadStats counts the packets sent within GSO runs and the received
// datagrams that the kernel had glued together (GRO).
func (c *Conn) OffloadStats() (gsoPackets, groDatagrams uint64) {
	return c.segs.Load(), c.glued.Load()
}

// probeGSO reports whether the kernel knows UDP_SEGMENT.
func (c *Conn) probeGSO() bool {
	rc, err := c.pc.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// control runs on the socket before it is bound: large buffers (forced past
// the sysctl limits when privileged), a receive timestamp on every datagram
// (QueueDelay), and DF on every datagram, since cab cuts what does not fit
// the path into fragments of its own and the kernel learns the path MTU
// from ICMP too-big messages.
func control(rc syscall.RawConn) error {
	return rc.Control(func(fd uintptr) {
		s := int(fd)
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				unix.SetsockoptInt(s, unix.SOL_SOCKET, o[1], socketBuffer)
			}
		}
		unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
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
	if !a.Addr().Unmap().Is4() {
		network, level, opt, hdr = "udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU, 40+8
	}
	probe, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(AddrFrom(a.AddrPort).AddrPort))
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

// ReadBatch implements transport.Conn with one recvmmsg for the batch. A
// packet longer than its buffer is dropped (the kernel flags it truncated)
// and the packets after it move up.
func (c *Conn) ReadBatch(ps []transport.Packet) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("udp read: %w", net.ErrClosed)
	}
	if len(ps) == 0 {
		return 0, nil
	}
	if c.gro.Load() || c.gi < c.gn {
		return c.readGRO(ps)
	}
	r := &c.rd
	r.setup(len(ps), stampSpace)
	for i := range ps {
		r.setBuf(i, ps[i].B[:cap(ps[i].B)])
	}
	defer r.clearBufs(len(ps))
	retries := 0
	for {
		n, err := c.recv(len(ps))
		if err != nil {
			if err := c.readError(err, &retries); err != nil {
				return 0, err
			}
			continue
		}
		if n > 0 {
			_, stamp := scanCmsgs(r.oob(0))
			c.setDelay(stamp)
		}
		out := 0
		for i := range n {
			h := &r.hdrs[i]
			ap, ok := r.from(i)
			if !ok || h.Hdr.Flags&unix.MSG_TRUNC != 0 {
				continue // longer than the caller's buffer, or no sender
			}
			if out != i { // close the gap left by a dropped packet
				ps[out].B, ps[i].B = ps[i].B, ps[out].B
			}
			ps[out].B = ps[out].B[:h.Len]
			ps[out].Addr = c.addrOf(ap)
			out++
		}
		if out > 0 {
			return out, nil
		}
	}
}

// QueueDelay reports how long the oldest packet that the last ReadBatch
// returned had waited in the socket's receive queue, from the kernel's
// receive timestamp (0 when the kernel gave none). Only the reader may
// call it.
func (c *Conn) QueueDelay() time.Duration { return c.delay }

// setDelay sets the delay of a batch whose oldest packet the kernel
// received at stamp (unix nanoseconds; 0: unknown).
func (c *Conn) setDelay(stamp int64) {
	c.delay = 0
	if stamp != 0 {
		c.delay = max(0, time.Duration(time.Now().UnixNano()-stamp))
	}
}

// addrOf returns ap as a transport.Addr, reusing the last one when the
// sender is the same.
func (c *Conn) addrOf(ap netip.AddrPort) transport.Addr {
	if c.lastAddr == nil || ap != c.lastAP {
		c.lastAP, c.lastAddr = ap, Addr{ap}
	}
	return c.lastAddr
}

// GSO limits: the segments the kernel takes in one UDP_SEGMENT send, and
// the bytes.
const (
	maxGSOSegments = 64
	maxGSOBytes    = maxPacket4
)

// WriteBatch implements transport.Conn with sendmmsg. With GSO on, each run
// of packets to one address that are all of one size (the last may be
// shorter) goes as one UDP_SEGMENT message, which the kernel cuts into
// datagrams: one pass through the stack for the whole run. A packet the
// kernel refuses is lost and counted in SendErrors, and the rest of the
// batch still goes.
func (c *Conn) WriteBatch(ps []transport.Packet) error {
	if c.closed.Load() {
		return fmt.Errorf("udp write: %w", net.ErrClosed)
	}
	w := c.wpool.Get().(*writer)
	var err error
	gso := c.gso.Load()
	k, runs := 0, 0
	for i := 0; i < len(ps); {
		a, ok := c.check(&ps[i], &err)
		if !ok {
			i++
			continue
		}
		j, size, total := i+1, len(ps[i].B), len(ps[i].B)
		for gso && size > 0 && j < len(ps) && j-i < maxGSOSegments {
			b := ps[j].B
			if ps[j].Addr != ps[i].Addr || len(b) == 0 || len(b) > size || total+len(b) > maxGSOBytes {
				break
			}
			total += len(b)
			j++
			if len(b) < size {
				break
			}
		}
		if k == len(w.msgs) {
			w.msgs = append(w.msgs, ipv6.Message{Buffers: make([][]byte, 1), Addr: &net.UDPAddr{IP: make(net.IP, 16)}})
		}
		m := &w.msgs[k]
		w.pkts = append(w.pkts[:k], j-i)
		if j-i == 1 {
			m.Buffers[0], m.OOB = ps[i].B, nil
		} else {
			if runs == len(w.runs) {
				w.runs = append(w.runs, make([]byte, 0, maxGSOBytes))
				w.oobs = append(w.oobs, make([]byte, unix.CmsgSpace(2)))
			}
			buf := w.runs[runs][:0]
			for _, p := range ps[i:j] {
				buf = append(buf, p.B...)
			}
			m.Buffers[0], m.OOB = buf, segmentCmsg(w.oobs[runs], size)
			runs++
			c.segs.Add(uint64(j - i))
		}
		setUDPAddr(m.Addr.(*net.UDPAddr), a)
		k++
		i = j
	}
	for sent := 0; sent < k; {
		n, werr := c.bc.WriteBatch(w.msgs[sent:k], 0)
		if werr != nil || n <= 0 {
			if errors.Is(werr, net.ErrClosed) {
				err = fmt.Errorf("udp write: %w", net.ErrClosed)
				break
			}
			// Nothing was sent: the first message failed, and it is lost.
			// EIO for a GSO message means the device cannot checksum
			// segments: GSO goes off for good.
			if w.msgs[sent].OOB != nil && errors.Is(werr, unix.EIO) {
				c.gso.Store(false)
			}
			c.sendErrors.Add(uint64(w.pkts[sent]))
			n = 1
		}
		sent += n
	}
	for i := range k {
		w.msgs[i].Buffers[0], w.msgs[i].OOB = nil, nil
	}
	c.wpool.Put(w)
	return err
}

// segmentCmsg writes a UDP_SEGMENT control message for segments of size
// bytes into oob and returns it.
func segmentCmsg(oob []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}

// Control message space per received message: the receive timestamp
// (SCM_TIMESTAMPNS), and with GRO the segment size (UDP_GRO).
var (
	stampSpace = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))
	groSpace   = stampSpace + unix.CmsgSpace(4)*2
)

// scanCmsgs returns the segment size of a UDP_GRO control message in oob
// (0 when there is none) and the receive time of an SCM_TIMESTAMPNS one,
// in unix nanoseconds (0 when there is none).
func scanCmsgs(oob []byte) (gro int, stamp int64) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return gro, stamp
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			gro = int(binary.NativeEndian.Uint32(data))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), data)
			stamp = ts.Nano()
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return gro, stamp
		}
		oob = oob[next:]
	}
	return gro, stamp
}

// groMessages is how many 64 KiB datagrams a GRO read takes at once.
const groMessages = 16

// readGRO is ReadBatch with GRO on: datagrams, each possibly many packets
// glued by the kernel, land in the reader's own buffers and are cut into
// the caller's packets, across calls when they do not all fit.
func (c *Conn) readGRO(ps []transport.Packet) (int, error) {
	r := &c.rd
	if c.gbufs == nil {
		c.gbufs = make([][]byte, groMessages)
		c.gstamps = make([]int64, groMessages)
		for i := range c.gbufs {
			c.gbufs[i] = make([]byte, 1<<16)
		}
	}
	retries := 0
	for {
		first := c.gi
		if out := c.cutGRO(ps); out > 0 {
			c.setDelay(c.gstamps[min(first, c.gn-1)])
			return out, nil
		}
		r.setup(groMessages, groSpace)
		for i, b := range c.gbufs {
			r.setBuf(i, b)
		}
		n, err := c.recv(groMessages)
		if err != nil {
			if err := c.readError(err, &retries); err != nil {
				return 0, err
			}
			continue
		}
		c.gn, c.gi, c.gpos, c.gsize = n, 0, 0, 0
		for i := range n {
			_, c.gstamps[i] = scanCmsgs(r.oob(i))
		}
	}
}

// cutGRO moves packets from the datagrams read into ps.
func (c *Conn) cutGRO(ps []transport.Packet) int {
	r := &c.rd
	out := 0
	for out < len(ps) && c.gi < c.gn {
		h := &r.hdrs[c.gi]
		size := int(h.Len)
		ap, ok := r.from(c.gi)
		if !ok || h.Hdr.Flags&unix.MSG_TRUNC != 0 || c.gpos >= size {
			c.gi, c.gpos, c.gsize = c.gi+1, 0, 0
			continue
		}
		if c.gsize == 0 {
			c.gsize, _ = scanCmsgs(r.oob(c.gi))
			if c.gsize <= 0 || c.gsize > size {
				c.gsize = size
			} else if c.gsize < size {
				c.glued.Add(1)
			}
		}
		n := min(c.gsize, size-c.gpos)
		b := c.gbufs[c.gi][c.gpos : c.gpos+n]
		c.gpos += n
		if n > cap(ps[out].B) {
			continue // longer than the caller's buffer
		}
		ps[out].B = append(ps[out].B[:0], b...)
		ps[out].Addr = c.addrOf(ap)
		out++
	}
	return out
}

// reader is the state of recvmmsg: headers, buffers, sender addresses and
// control messages, made once and reused, so a read allocates nothing.
type reader struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oobs  []byte
	oobN  int // control space per message
	rc    syscall.RawConn
	want  int
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool
}

// setup readies n messages with oobN bytes of control space each.
func (r *reader) setup(n, oobN int) {
	if len(r.hdrs) < n || r.oobN != oobN {
		r.hdrs = make([]unix.Mmsghdr, max(n, len(r.hdrs)))
		r.iovs = make([]unix.Iovec, len(r.hdrs))
		r.names = make([]unix.RawSockaddrInet6, len(r.hdrs))
		r.oobN = oobN
		r.oobs = make([]byte, oobN*len(r.hdrs))
	}
	for i := range n {
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		h.Flags = 0
		if oobN > 0 {
			h.Control = &r.oobs[i*oobN]
			h.SetControllen(oobN)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
	}
}

func (r *reader) setBuf(i int, b []byte) {
	r.iovs[i] = unix.Iovec{}
	if len(b) > 0 {
		r.iovs[i].Base = &b[0]
		r.iovs[i].SetLen(len(b))
	}
}

// clearBufs drops the references to the caller's buffers.
func (r *reader) clearBufs(n int) {
	for i := range n {
		r.iovs[i] = unix.Iovec{}
	}
}

// from returns the sender of message i, IPv4 unmapped.
func (r *reader) from(i int) (netip.AddrPort, bool) {
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET6:
		port := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(port[0])<<8|uint16(port[1])), true
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(port[0])<<8|uint16(port[1])), true
	}
	return netip.AddrPort{}, false
}

// oob returns the control messages received with message i.
func (r *reader) oob(i int) []byte {
	h := &r.hdrs[i].Hdr
	return r.oobs[i*r.oobN : i*r.oobN+int(h.Controllen)]
}

// recvmmsg is the raw system call on fd; it returns false, so that the
// poller waits, when nothing is queued.
func (r *reader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// recv reads up to n messages, waiting for the first.
func (c *Conn) recv(n int) (int, error) {
	r := &c.rd
	if r.fn == nil {
		r.fn = r.recvmmsg
		rc, err := c.pc.SyscallConn()
		if err != nil {
			return 0, err
		}
		r.rc = rc
	}
	r.want = n
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	return r.n, nil
}

// setUDPAddr writes a into ua without allocating: IPv4 as 4 bytes (sent as
// an AF_INET address, which a dual-stack socket takes), IPv6 as 16.
func setUDPAddr(ua *net.UDPAddr, a Addr) {
	ip := a.Addr().Unmap()
	if ip.Is4() {
		b := ip.As4()
		ua.IP = append(ua.IP[:0], b[:]...)
	} else {
		b := ip.As16()
		ua.IP = append(ua.IP[:0], b[:]...)
	}
	ua.Port = int(a.Port())
	ua.Zone = ip.Zone()
}
