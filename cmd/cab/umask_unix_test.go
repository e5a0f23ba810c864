//go:build !windows

package main

import (
	"syscall"
	"testing"
)

// zeroUmask sets the umask to 0 for the rest of the test.
func zeroUmask(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
}
