package stream

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// tuneTCP, which the server applies to every connection it accepts, sets
// TCP_NODELAY, TCP_NOTSENT_LOWAT and TCP_USER_TIMEOUT.
func TestTCPServerTunesSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tc := a.(*net.TCPConn)
	tuneTCP(tc)
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name      string
		opt, want int
	}{
		{"TCP_NODELAY", unix.TCP_NODELAY, 1},
		{"TCP_NOTSENT_LOWAT", unix.TCP_NOTSENT_LOWAT, tcpNotSentLowat},
		{"TCP_USER_TIMEOUT", unix.TCP_USER_TIMEOUT, tcpUserTimeoutMs},
	} {
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, o.opt) })
		if gerr != nil || v != o.want {
			t.Errorf("%s = %d, %v; want %d", o.name, v, gerr, o.want)
		}
	}
}
