//go:build !linux && !freebsd && !darwin

package bridgeif

import (
	"errors"
	"fmt"
	"net"
)

// Verified: compiled for windows (amd64, arm64) by make cross; not run.

// VDE is a port of a vde_switch; this system has none to offer: the
// protocol needs unix datagram sockets, which Windows lacks.
type VDE struct{}

var _ Port = (*VDE)(nil)

var errNoVDE = errors.New("vde: needs unix datagram sockets, which this system lacks (Linux, FreeBSD and macOS have them); use tap: or stdio")

// OpenVDE fails: see VDE.
func OpenVDE(dir string, o VDEOptions) (*VDE, error) {
	return nil, fmt.Errorf("vde %s: %w", dir, errNoVDE)
}

// SwitchPort returns 0.
func (v *VDE) SwitchPort() int { return 0 }

// ReadBatch implements Port: it returns net.ErrClosed.
func (v *VDE) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return 0, net.ErrClosed
}

// WriteBatch implements Port: it returns net.ErrClosed.
func (v *VDE) WriteBatch(bufs [][]byte, offset int) (int, error) { return 0, net.ErrClosed }

// Close implements Port.
func (v *VDE) Close() error { return nil }
