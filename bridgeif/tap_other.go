//go:build !linux

package bridgeif

import (
	"errors"
	"net"
)

// TAP is a TAP device; only Linux has them here.
type TAP struct{}

var errNoTAP = errors.New("TAP devices are supported on Linux only")

// OpenTAP fails: TAP devices are supported on Linux only.
func OpenTAP(name string) (*TAP, error) { return nil, errNoTAP }

// ReadBatch implements Port.
func (t *TAP) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return 0, net.ErrClosed
}

// WriteBatch implements Port.
func (t *TAP) WriteBatch(bufs [][]byte, offset int) (int, error) { return 0, net.ErrClosed }

// Close implements Port.
func (t *TAP) Close() error { return nil }
