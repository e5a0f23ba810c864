//go:build !windows

package main

import "golang.org/x/sys/unix"

// Verified: run on Linux by the systemd reload test (test/systemd_test.go),
// which looks for MONOTONIC_USEC= with RELOADING=1; compiled for freebsd
// and darwin by make cross, not run there.

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1.
func monotonicUsec() int64 {
	var t unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &t); err != nil {
		return 0
	}
	return t.Nano() / 1000
}
