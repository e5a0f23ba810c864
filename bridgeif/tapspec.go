package bridgeif

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
)

// TAPSpec is the argument of a tap: port: NAME[,bridge=BR|,ovs=BR][,mtu=N].
type TAPSpec struct {
	Name   string
	Bridge string // a Linux bridge to join
	OVS    string // an Open vSwitch bridge to join
	MTU    int    // 0: leave the MTU alone
	// NoOffload opens the TAP without segmentation and checksum offloads
	// (offload=off), one frame per system call.
	NoOffload bool
	// VLAN, when set, makes the port one VLAN (1 to 4094) of the TAP as an
	// 802.1Q trunk (Trunk): its frames leave tagged, and only frames
	// tagged with it come in, untagged. Several ports may be VLANs of one
	// TAP.
	VLAN uint16
	// Carrier is "follow" (the TAP has carrier only while a peer is up),
	// "on" (always carrier), or "" when the spec does not say and the
	// cable's role decides.
	Carrier string
}

// ParseTAPSpec parses NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=on|off][,carrier=follow|on][,vlan=N].
// On systems other than Linux the options that need Linux (bridge=, ovs=,
// mtu=, offload=on and carrier=follow) are refused in one line that says what to do
// instead; offload=off is accepted everywhere.
func ParseTAPSpec(s string) (TAPSpec, error) { return parseTAPSpec(s, runtime.GOOS) }

// parseTAPSpec is ParseTAPSpec as it behaves on the system goos, so that
// every system's messages are tested on Linux.
func parseTAPSpec(s, goos string) (TAPSpec, error) {
	parts := strings.Split(s, ",")
	ts := TAPSpec{Name: parts[0]}
	if ts.Name == "" {
		return ts, errors.New("no device name: use tap:NAME, e.g. tap:cab0")
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || v == "" {
			return ts, fmt.Errorf("option %q: use bridge=BR, ovs=BR, mtu=N, offload=off, carrier=follow|on or vlan=N", p)
		}
		switch k {
		case "bridge":
			ts.Bridge = v
		case "ovs":
			ts.OVS = v
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65535 {
				return ts, fmt.Errorf("mtu=%s: use a number from 68 to 65535", v)
			}
			ts.MTU = n
		case "offload":
			if v != "on" && v != "off" {
				return ts, fmt.Errorf("offload=%s: use offload=on or offload=off", v)
			}
			ts.NoOffload = v == "off"
			if v == "on" && goos != "linux" {
				return ts, errors.New("offload=on needs Linux (the virtio-net header of Linux TAPs): remove it")
			}
		case "carrier":
			if v != "follow" && v != "on" {
				return ts, fmt.Errorf("carrier=%s: use carrier=follow (carrier only while a peer is up) or carrier=on", v)
			}
			if v == "follow" && goos != "linux" {
				return ts, errors.New("carrier=follow needs Linux (TUNSETCARRIER): remove it, and let the bond or bridge watch the cable's peers another way")
			}
			ts.Carrier = v
		case "vlan":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 4094 {
				return ts, fmt.Errorf("vlan=%s: use a VLAN id from 1 to 4094 (the port is that VLAN of the TAP as a trunk)", v)
			}
			ts.VLAN = uint16(n)
		default:
			return ts, fmt.Errorf("unknown option %q: use bridge=BR, ovs=BR, mtu=N, offload=off, carrier=follow|on or vlan=N", k)
		}
	}
	if ts.Bridge != "" && ts.OVS != "" {
		return ts, errors.New("bridge= and ovs= together: a TAP joins one bridge")
	}
	if ts.VLAN != 0 && ts.Carrier == "follow" {
		return ts, errors.New("vlan= and carrier=follow together: a trunk TAP carries other VLANs too, so its carrier stays on; remove carrier=follow")
	}
	if goos != "linux" {
		if err := linuxOnlyOptions(ts, goos); err != nil {
			return ts, err
		}
	}
	return ts, nil
}

// linuxOnlyOptions refuses, on the system goos, the options of ts that
// need Linux, saying in one line how that system does the same.
func linuxOnlyOptions(ts TAPSpec, goos string) error {
	sys := map[string]string{"freebsd": "FreeBSD", "darwin": "macOS", "windows": "Windows"}[goos]
	switch {
	case ts.Bridge != "" && (goos == "freebsd" || goos == "darwin"):
		return fmt.Errorf("bridge= needs Linux; on %s add the tap to a bridge with ifconfig %s addm %s", sys, ts.Bridge, ts.Name)
	case ts.Bridge != "" && goos == "windows":
		return fmt.Errorf("bridge= needs Linux; on Windows bridge the TAP adapter %q with another in Network Connections (select both, Bridge Connections)", ts.Name)
	case ts.Bridge != "":
		return errors.New("bridge= needs Linux; add the tap to a bridge with the system's own tools")
	case ts.OVS != "":
		return fmt.Errorf("ovs= needs Linux; elsewhere add the tap to the switch yourself: ovs-vsctl add-port %s %s", ts.OVS, ts.Name)
	case ts.MTU != 0 && (goos == "freebsd" || goos == "darwin"):
		return fmt.Errorf("mtu= needs Linux; on %s set it with ifconfig %s mtu %d", sys, ts.Name, ts.MTU)
	case ts.MTU != 0 && goos == "windows":
		return fmt.Errorf("mtu= needs Linux; on Windows set the MTU in the TAP adapter's Advanced properties")
	case ts.MTU != 0:
		return errors.New("mtu= needs Linux; set the MTU with the system's own tools")
	}
	return nil
}

// An Attachment is a device's membership of a bridge.
type Attachment interface {
	// Detach takes the device out of the bridge.
	Detach() error
}
