package main

// Verified: compiled for windows (amd64, arm64) by make cross; not run.

// monotonicUsec returns 0: it is for systemd, which Windows does not have.
func monotonicUsec() int64 { return 0 }
