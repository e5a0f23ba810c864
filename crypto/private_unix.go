//go:build !windows

package crypto

import (
	"fmt"
	"os"
)

// Verified: run on Linux by TestKeys (a mode 0644 key is refused); compiled for
// freebsd and darwin by make cross, whose mode bits mean the same.

// checkPrivate refuses a key file that group or others may read or write.
func checkPrivate(path string, st os.FileInfo) error {
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key file %s is accessible by group or others (mode %04o): run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	return nil
}
