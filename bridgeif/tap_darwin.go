package bridgeif

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/songgao/water"
)

// Verified: compiled for darwin/amd64 and darwin/arm64 by make cross; not
// run (no Mac, and no TAP driver for current macOS). songgao/water opens a
// TAP on macOS through a tuntaposx-style kext only (/dev/tap0 …
// /dev/tap15); macOS's own utun is layer 3 and cannot carry frames.

// openTAPDevice opens the TAP tapN of a tuntaposx-style driver through
// songgao/water, which also brings it up.
func openTAPDevice(name string) (io.ReadWriteCloser, string, error) {
	if !strings.HasPrefix(name, "tap") || strings.Trim(name[3:], "0123456789") != "" || len(name) == 3 {
		return nil, "", fmt.Errorf("open tap %q: on macOS a TAP is named tapN (the driver's /dev/tap0 … /dev/tap15), e.g. tap:tap0", name)
	}
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name, Driver: water.MacOSDriverTunTapOSX},
	})
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("open tap %q: /dev/%s missing: macOS has no TAP driver of its own; one needs a tuntaposx-compatible kext (see the README), or use vde: or stdio", name, name)
	case errors.Is(err, os.ErrPermission):
		return nil, "", fmt.Errorf("open tap %q: %w: run as root", name, err)
	case err != nil:
		return nil, "", fmt.Errorf("open tap %q: %w", name, err)
	}
	return ifce, ifce.Name(), nil
}
