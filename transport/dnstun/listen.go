package dnstun

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Bounds of the server's DNS-over-TCP connections (resolvers fall back to
// TCP for truncated answers): per source IP address and in all. A
// connection over either is closed at once and counted.
const (
	tcpPerIP = 32
	tcpTotal = 512
)

// limitListener caps the connections it hands out per source IP and in
// all; a connection gives its place back when it is closed.
type limitListener struct {
	net.Listener
	maxPerIP, maxTotal int
	refused            atomic.Uint64

	mu    sync.Mutex
	perIP map[netip.Addr]int
	total int
}

func newLimitListener(l net.Listener, perIP, total int) *limitListener {
	return &limitListener{Listener: l, maxPerIP: perIP, maxTotal: total, perIP: make(map[netip.Addr]int)}
}

// Accept returns the next connection within the limits.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = ta.AddrPort().Addr().Unmap()
		}
		l.mu.Lock()
		if l.total >= l.maxTotal || l.perIP[ip] >= l.maxPerIP {
			l.mu.Unlock()
			c.Close()
			l.refused.Add(1)
			continue
		}
		l.total++
		l.perIP[ip]++
		l.mu.Unlock()
		return &limitConn{Conn: c, l: l, ip: ip}, nil
	}
}

// limitConn is a connection of a limitListener.
type limitConn struct {
	net.Conn
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.total--
		if c.l.perIP[c.ip]--; c.l.perIP[c.ip] <= 0 {
			delete(c.l.perIP, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
