package main

import "testing"

// zeroUmask skips the test: Windows has neither a umask nor mode bits.
func zeroUmask(t *testing.T) {
	t.Skip("SKIPPED on Windows: no umask, no mode bits")
}
