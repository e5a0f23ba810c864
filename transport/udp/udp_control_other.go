//go:build !linux && !windows

package udp

import "syscall"

// Verified: compiled for freebsd and darwin (amd64, arm64) by make cross;
// not run.

// control runs on the socket before it is bound; nothing to do here.
func control(syscall.RawConn) error { return nil }

// transientOS are the errors of this system, beyond transient's, that
// concern one packet: none.
var transientOS []error
