//go:build !linux

package bridgeif

import (
	"errors"
	"fmt"
	"net"
)

// TAP is a TAP device; this build has none: TAP devices are supported on
// Linux only.
type TAP struct{}

var _ Port = (*TAP)(nil)

var errNoTAP = errors.New("TAP devices are supported on Linux only")

// OpenTAP fails: TAP devices are supported on Linux only.
func OpenTAP(name string) (*TAP, error) {
	return nil, fmt.Errorf("open tap %q: %w", name, errNoTAP)
}

// Name returns "".
func (t *TAP) Name() string { return "" }

// Created returns false.
func (t *TAP) Created() bool { return false }

// MTU fails: TAP devices are supported on Linux only.
func (t *TAP) MTU() (int, error) { return 0, errNoTAP }

// SetMTU fails: TAP devices are supported on Linux only.
func (t *TAP) SetMTU(mtu int) error { return errNoTAP }

// HardwareAddr fails: TAP devices are supported on Linux only.
func (t *TAP) HardwareAddr() (net.HardwareAddr, error) { return nil, errNoTAP }

// SetHardwareAddr fails: TAP devices are supported on Linux only.
func (t *TAP) SetHardwareAddr(mac net.HardwareAddr) error { return errNoTAP }

// SetCarrier fails: TAP devices are supported on Linux only.
func (t *TAP) SetCarrier(up bool) error { return errNoTAP }

// ReadBatch implements Port: it returns net.ErrClosed.
func (t *TAP) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return 0, net.ErrClosed
}

// WriteBatch implements Port: it returns net.ErrClosed.
func (t *TAP) WriteBatch(bufs [][]byte, offset int) (int, error) { return 0, net.ErrClosed }

// Close implements Port.
func (t *TAP) Close() error { return nil }

// TAPOptions are the settings of OpenTAPWith.
type TAPOptions struct{ Offload bool }

// OpenTAPWith fails: TAP devices are supported on Linux only.
func OpenTAPWith(name string, o TAPOptions) (*TAP, error) { return OpenTAP(name) }
