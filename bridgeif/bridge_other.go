//go:build !linux

package bridgeif

import "errors"

// Verified: compiled for freebsd, darwin and windows (amd64, arm64) by make
// cross; not run. ParseTAPSpec refuses bridge= and ovs= on these systems
// before a TAP is opened, so these are reached only by a caller that skips
// it; TestTAPSpecOtherSystems runs those messages on Linux.

var errBridgeLinux = errors.New("bridge= and ovs= need Linux; add the tap to a bridge with the system's own tools")

// AttachBridge fails: joining a Linux bridge needs Linux.
func AttachBridge(dev, br string) (Attachment, error) { return nil, errBridgeLinux }

// AttachOVS fails: cab attaches to Open vSwitch on Linux only.
func AttachOVS(dev, br string) (Attachment, error) { return nil, errBridgeLinux }

// SetTAPPersistent fails: persistent TAPs (TUNSETPERSIST) are Linux's.
func SetTAPPersistent(t *TAP, on bool) error {
	return errors.New("a persistent TAP needs Linux")
}
