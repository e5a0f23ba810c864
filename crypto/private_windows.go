package crypto

import "os"

// Verified: compiled for windows (amd64, arm64) by make cross; not run.

// checkPrivate accepts any key file: Windows has no mode bits (Go reports
// every writable file as 0666), and who may read a file is in its access
// list, which cab does not inspect. Keep keys in a directory that only
// Administrators and the account cab runs as can read.
func checkPrivate(path string, st os.FileInfo) error { return nil }
