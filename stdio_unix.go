//go:build !windows

package cab

import (
	"fmt"
	"os"
	"syscall"

	"cab/bridgeif"
)

// Verified: run on Linux by the dpipe and cab plug integration tests
// (test/endpoints_test.go); compiled for freebsd and darwin by make cross,
// not run there.

// OpenStdio returns a port of frames on stdin and stdout in vde_plug's
// stream format. Stdin is made non-blocking first, so that closing the
// port unblocks a read.
func OpenStdio() (bridgeif.Port, error) {
	if err := syscall.SetNonblock(0, true); err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	in := os.NewFile(0, "stdin")
	return bridgeif.NewStream(in, os.Stdout, in.Close), nil
}
