//go:build !linux

package bridgeif

import (
	"errors"
	"fmt"
	"net"
)

// Verified: compiled for freebsd, darwin and windows (amd64, arm64) by make
// cross; not run on those systems. The frame handling it delegates to
// (rwPort) is run on Linux by TestRWPort* and, over a real TAP opened
// through songgao/water, by TestWaterTAP*.

// TAP is a TAP device opened by the system's own driver (openTAPDevice:
// /dev/tapN on FreeBSD, tuntaposx's /dev/tapN on macOS, tap-windows6 on
// Windows), one frame per read and write. The device exists before cab
// opens it and stays after; its MTU and MAC are the system's to set.
type TAP struct {
	rwPort
}

var _ Port = (*TAP)(nil)

// OpenTAP opens the TAP device name.
func OpenTAP(name string) (*TAP, error) { return OpenTAPWith(name, TAPOptions{}) }

// TAPOptions are the settings of OpenTAPWith.
type TAPOptions struct {
	// Offload asks for Linux's TAP offloads; other systems have none, and
	// the TAP passes one frame per system call.
	Offload bool
}

// OpenTAPWith is OpenTAP; the options are Linux's.
func OpenTAPWith(name string, o TAPOptions) (*TAP, error) {
	if name == "" {
		return nil, errors.New("open tap: empty device name")
	}
	rw, dev, err := openTAPDevice(name)
	if err != nil {
		return nil, err
	}
	return &TAP{rwPort{name: dev, rw: rw}}, nil
}

// errNeedsLinux is the error of the settings cab makes on Linux only.
func (t *TAP) errNeedsLinux(what, how string) error {
	return fmt.Errorf("tap %q: %s needs Linux; %s", t.name, what, how)
}

// Name returns the device name.
func (t *TAP) Name() string { return t.name }

// Created returns false: cab opens TAPs that the system made.
func (t *TAP) Created() bool { return false }

// MTU returns the device's MTU.
func (t *TAP) MTU() (int, error) {
	ifi, err := net.InterfaceByName(t.name)
	if err != nil {
		return 0, fmt.Errorf("tap %q: get mtu: %w", t.name, err)
	}
	return ifi.MTU, nil
}

// SetMTU fails: cab sets a TAP's MTU on Linux only.
func (t *TAP) SetMTU(mtu int) error {
	return t.errNeedsLinux("setting the MTU", fmt.Sprintf("set it with the system's tools (ifconfig %s mtu %d)", t.name, mtu))
}

// HardwareAddr returns the device's MAC address.
func (t *TAP) HardwareAddr() (net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(t.name)
	if err != nil {
		return nil, fmt.Errorf("tap %q: get MAC: %w", t.name, err)
	}
	return ifi.HardwareAddr, nil
}

// SetHardwareAddr fails: cab sets a TAP's MAC on Linux only.
func (t *TAP) SetHardwareAddr(mac net.HardwareAddr) error {
	return t.errNeedsLinux("setting the MAC", "the system's driver chose one")
}
