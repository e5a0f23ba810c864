package udp

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Verified: compiled for windows/amd64 and windows/arm64 by make cross; not
// run. Windows reports an ICMP port unreachable for a datagram sent earlier
// as WSAECONNRESET on the next read of the socket, which would end the
// conn loop; SIO_UDP_CONNRESET turns that off.

// control turns off the ICMP port-unreachable reports on reads. Where
// Windows refuses, the reads' WSAECONNRESET is transient (transientOS).
func control(rc syscall.RawConn) error {
	rc.Control(func(fd uintptr) {
		off := uint32(0)
		var ret uint32
		windows.WSAIoctl(windows.Handle(fd), windows.SIO_UDP_CONNRESET, (*byte)(unsafe.Pointer(&off)), uint32(unsafe.Sizeof(off)), nil, 0, &ret, nil, 0)
	})
	return nil
}

// transientOS are Windows' errors that concern one packet: a port
// unreachable or a TTL expiry reported for an earlier datagram, and a
// datagram longer than the buffer.
var transientOS = []error{windows.WSAECONNRESET, windows.WSAENETRESET, windows.WSAEMSGSIZE}
