package bridgeif

import (
	"fmt"
	"io"

	"github.com/songgao/water"
)

// Verified: compiled for windows/amd64 and windows/arm64 by make cross; not
// run (no Windows machine). songgao/water opens an adapter of OpenVPN's
// tap-windows6 driver by its component id and its name in Network
// Connections, and sets its media status connected.

// tapComponentID is tap-windows6's component id.
const tapComponentID = "tap0901"

// openTAPDevice opens the tap-windows6 adapter that Network Connections
// names name.
func openTAPDevice(name string) (io.ReadWriteCloser, string, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{ComponentID: tapComponentID, InterfaceName: name},
	})
	if err != nil {
		return nil, "", fmt.Errorf("open tap %q: %w: install tap-windows6 (OpenVPN's TAP-Windows adapter, component id %s), name an adapter %q in Network Connections, and run as Administrator", name, err, tapComponentID, name)
	}
	return ifce, ifce.Name(), nil
}
