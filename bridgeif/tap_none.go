//go:build !linux && !freebsd && !darwin && !windows

package bridgeif

import (
	"fmt"
	"io"
)

// Verified: not compiled by make cross, which builds the four systems
// cab supports; this file keeps the package whole elsewhere.

// openTAPDevice fails: cab opens TAPs on Linux, FreeBSD, macOS and Windows.
func openTAPDevice(name string) (io.ReadWriteCloser, string, error) {
	return nil, "", fmt.Errorf("open tap %q: cab opens TAP devices on Linux, FreeBSD, macOS and Windows only; use vde: or stdio", name)
}
