package stream

import (
	"net"

	"golang.org/x/sys/unix"
)

// Verified: run on Linux; TestTCPServerTunesSockets reads both options
// back from an accepted connection.

// tuneTCP sets what a stream of sealed frames wants from TCP: no Nagle
// delay, a small TCP_NOTSENT_LOWAT, so that the kernel does not queue
// seconds of frames, and TCP_USER_TIMEOUT, so that a connection whose data
// goes unacknowledged dies within about 20 s.
func tuneTCP(c *net.TCPConn) {
	c.SetNoDelay(true)
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, tcpNotSentLowat)
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, tcpUserTimeoutMs)
		})
	}
}
