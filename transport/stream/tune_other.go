//go:build !linux

package stream

import "net"

// Verified: compiled for freebsd, darwin and windows (amd64, arm64) by make
// cross; not run. Those systems lack TCP_USER_TIMEOUT (FreeBSD also
// TCP_NOTSENT_LOWAT): a half-open connection is found by the keepalives
// ListenTCP sets alone.

// tuneTCP turns off Nagle's delay.
func tuneTCP(c *net.TCPConn) { c.SetNoDelay(true) }
