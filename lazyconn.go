package cab

import (
	"net"
	"sync"
	"time"

	"cab/transport"
)

// lazyConn is a client's fallback carrier that could not be opened at
// start (a DNS resolver not reachable yet): it is opened when the cable
// first dials over it, in its turn among the carriers, and again at each
// turn until it opens. Until then it sends nothing, its reads wait, and
// the carriers before it work as if it were not there.
type lazyConn struct {
	scheme    string
	maxPacket int
	open      func() (transport.Conn, transport.Addr, error)

	ready     chan struct{} // closed once conn is set
	closed    chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex // guards the following fields, and serialises open
	conn   transport.Conn
	remote transport.Addr
}

var (
	_ transport.Conn         = (*lazyConn)(nil)
	_ transport.Schemer      = (*lazyConn)(nil)
	_ transport.PathMTUer    = (*lazyConn)(nil)
	_ transport.PathStatser  = (*lazyConn)(nil)
	_ transport.DropCounter  = (*lazyConn)(nil)
	_ transport.RTTer        = (*lazyConn)(nil)
	_ transport.ReachChecker = (*lazyConn)(nil)
)

func newLazyConn(scheme string, maxPacket int, open func() (transport.Conn, transport.Addr, error)) *lazyConn {
	return &lazyConn{scheme: scheme, maxPacket: maxPacket, open: open, ready: make(chan struct{}), closed: make(chan struct{})}
}

// resolve opens the carrier if it is not open yet, and returns the addr to
// dial over it: a Dialer's Resolve.
func (l *lazyConn) resolve() (transport.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		return l.remote, nil
	}
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	c, remote, err := l.open()
	if err != nil {
		return nil, err
	}
	l.conn, l.remote = c, remote
	close(l.ready)
	return remote, nil
}

func (l *lazyConn) inner() transport.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn
}

// ReadBatch waits until the carrier is open, then reads from it.
func (l *lazyConn) ReadBatch(ps []transport.Packet) (int, error) {
	select {
	case <-l.ready:
		return l.inner().ReadBatch(ps)
	case <-l.closed:
		return 0, net.ErrClosed
	}
}

// WriteBatch writes to the open carrier; before it is open, the packets
// are lost.
func (l *lazyConn) WriteBatch(ps []transport.Packet) error {
	select {
	case <-l.closed:
		return net.ErrClosed
	default:
	}
	if c := l.inner(); c != nil {
		return c.WriteBatch(ps)
	}
	return nil
}

func (l *lazyConn) MaxPacket() int {
	if c := l.inner(); c != nil {
		return c.MaxPacket()
	}
	return l.maxPacket
}

func (l *lazyConn) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		return l.conn.Close()
	}
	return nil
}

func (l *lazyConn) Scheme() string { return l.scheme }

func (l *lazyConn) PathMTU(a transport.Addr) int {
	if c, ok := l.inner().(transport.PathMTUer); ok {
		return c.PathMTU(a)
	}
	return 0
}

func (l *lazyConn) PathStats(a transport.Addr) (transport.PathStats, bool) {
	if c, ok := l.inner().(transport.PathStatser); ok {
		return c.PathStats(a)
	}
	return transport.PathStats{}, false
}

func (l *lazyConn) DropCounts() map[string]uint64 {
	if c, ok := l.inner().(transport.DropCounter); ok {
		return c.DropCounts()
	}
	return nil
}

func (l *lazyConn) RTT(a transport.Addr) time.Duration {
	if c, ok := l.inner().(transport.RTTer); ok {
		return c.RTT(a)
	}
	return 0
}

func (l *lazyConn) CheckReach(a transport.Addr) error {
	if c, ok := l.inner().(transport.ReachChecker); ok {
		return c.CheckReach(a)
	}
	return nil
}
