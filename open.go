package cab

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"cab/bridgeif"
	"cab/crypto"
)

// OpenPort opens the local L2 attachment named by spec:
//
//	tap:NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=off][,vlan=N]
//	                                      a TAP device, created when it does
//	                                      not exist, optionally attached to a
//	                                      Linux bridge or an Open vSwitch bridge;
//	                                      with vlan=N, VLAN N of the TAP as a
//	                                      trunk, which several ports may share
//	vde:DIR[N]                            a port (number N) of the vde_switch at DIR
//	stdio                                 frames on stdin/stdout in vde_plug's
//	                                      stream format
//
// A TAP that cab creates gets a MAC derived from id (the cable's public
// key) and its name, so that it keeps its MAC across restarts and the
// neighbours' ARP caches stay right. A TAP attached to an Open vSwitch
// bridge is made persistent: OVS does not pick up a TAP that was removed
// and created again, so cab reuses it across restarts.
func OpenPort(spec string, id crypto.PublicKey) (bridgeif.Port, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	if strings.HasPrefix(kind, "stdio,") {
		return nil, fmt.Errorf("port %q: stdio takes no options (vlan= is an option of tap: ports): the program at the other end of the pipe tags frames if they need it", spec)
	}
	switch kind {
	case "tap":
		return openTAP(spec, arg, id)
	case "vde":
		if strings.Contains(arg, ",vlan=") {
			return nil, fmt.Errorf("port %q: vlan= is an option of tap: ports; a vde_switch puts its port in a VLAN itself: drop vlan= and run port/setvlan PORT VLAN on the switch's console (vdeterm)", spec)
		}
		dir, n, err := bridgeif.ParseVDESpec(arg)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", spec, err)
		}
		return bridgeif.OpenVDE(dir, bridgeif.VDEOptions{Port: n, Description: "cab"})
	case "stdio":
		if arg != "" {
			return nil, fmt.Errorf("port %q: stdio takes no argument", spec)
		}
		return OpenStdio()
	default:
		return nil, fmt.Errorf("port %q: unknown kind %q: use tap:NAME, vde:DIR or stdio (and NAME=SPEC for a named segment)", spec, kind)
	}
}

// OpenPortPerPeer returns, for vde:DIR, what opens a port of that switch
// for each peer (Config.PortPerPeer), as vde_cryptcab does: the switch sees
// each client on a port of its own, described by the peer's name.
func OpenPortPerPeer(spec string, log *slog.Logger) (func(name string) (bridgeif.Port, error), error) {
	dir, ok := strings.CutPrefix(spec, "vde:")
	if !ok {
		return nil, fmt.Errorf("-s %s: a port per peer needs a vde_switch (vde:DIR)", spec)
	}
	vdir, _, err := bridgeif.ParseVDESpec(dir)
	if err != nil {
		return nil, fmt.Errorf("-s %s: %w", spec, err)
	}
	if _, err := os.Stat(filepath.Join(vdir, "ctl")); err != nil {
		return nil, fmt.Errorf("-s %s: no vde_switch at %s (start one with vde_switch -d -s %s)", spec, vdir, vdir)
	}
	return func(name string) (bridgeif.Port, error) {
		return bridgeif.OpenVDE(vdir, bridgeif.VDEOptions{Description: "cab client " + name, Logger: log})
	}, nil
}

// attachedTAP is a TAP in a bridge; Close leaves the bridge first.
type attachedTAP struct {
	*bridgeif.TAP
	att bridgeif.Attachment
}

func (a *attachedTAP) Close() error {
	if err := a.att.Detach(); err != nil {
		a.TAP.Close()
		return err
	}
	return a.TAP.Close()
}

func openTAP(spec, arg string, id crypto.PublicKey) (bridgeif.Port, error) {
	ts, err := bridgeif.ParseTAPSpec(arg)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", spec, err)
	}
	if ts.VLAN != 0 {
		return openVLAN(spec, ts, id)
	}
	return openTAPSpec(spec, ts, id)
}

// trunks are the TAPs open as 802.1Q trunks in this process, by name, so
// that several ports (vlan=N) share one.
var trunks = struct {
	sync.Mutex
	m map[string]*trunkTAP
}{m: map[string]*trunkTAP{}}

// trunkTAP is one trunk TAP, and the spec it was opened with.
type trunkTAP struct {
	trunk *bridgeif.Trunk
	ts    bridgeif.TAPSpec
}

// openVLAN opens VLAN ts.VLAN of the trunk TAP ts.Name, opening the TAP
// when no other port of this process has it. The TAP keeps its offloads
// (unless offload=off): it cuts the tagged super-frames it reads and glues
// the tagged segments written to it, with the offsets the kernel reads
// counted from the frame's first byte, tag included.
func openVLAN(spec string, ts bridgeif.TAPSpec, id crypto.PublicKey) (bridgeif.Port, error) {
	trunks.Lock()
	defer trunks.Unlock()
	tt := trunks.m[ts.Name]
	if tt == nil {
		tapts := ts
		tapts.VLAN = 0
		port, err := openTrunkTAP(spec, tapts, id)
		if err != nil {
			return nil, err
		}
		name := ts.Name
		tt = &trunkTAP{ts: tapts}
		tt.trunk = bridgeif.NewTrunk(port, func() {
			trunks.Lock()
			if trunks.m[name] == tt {
				delete(trunks.m, name)
			}
			trunks.Unlock()
		})
		trunks.m[name] = tt
	} else if o := tt.ts; o.Bridge != ts.Bridge || o.OVS != ts.OVS || ts.MTU != 0 && o.MTU != ts.MTU || o.NoOffload != ts.NoOffload {
		return nil, fmt.Errorf("port %q: the trunk TAP %s is already open with other options (bridge=%s ovs=%s mtu=%d offload=%s): give every vlan= port of a TAP the same",
			spec, ts.Name, o.Bridge, o.OVS, o.MTU, map[bool]string{false: "on", true: "off"}[o.NoOffload])
	}
	p, err := tt.trunk.VLAN(ts.VLAN)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", spec, err)
	}
	return p, nil
}

// openTrunkTAP opens the TAP of a trunk: openTAPSpec, or a fake in tests.
var openTrunkTAP = openTAPSpec

// openTAPSpec opens the TAP that ts describes.
func openTAPSpec(spec string, ts bridgeif.TAPSpec, id crypto.PublicKey) (bridgeif.Port, error) {
	tap, err := bridgeif.OpenTAPWith(ts.Name, bridgeif.TAPOptions{Offload: !ts.NoOffload})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (bridgeif.Port, error) {
		tap.Close()
		return nil, err
	}
	if tap.Created() {
		if err := tap.SetHardwareAddr(StableMAC(id, ts.Name)); err != nil {
			return fail(err)
		}
	}
	if ts.MTU > 0 {
		if err := tap.SetMTU(ts.MTU); err != nil {
			return fail(err)
		}
	}
	var att bridgeif.Attachment
	switch {
	case ts.Bridge != "":
		att, err = bridgeif.AttachBridge(ts.Name, ts.Bridge)
	case ts.OVS != "":
		if err := bridgeif.SetTAPPersistent(tap, true); err != nil {
			return fail(err)
		}
		att, err = bridgeif.AttachOVS(ts.Name, ts.OVS)
	default:
		return tap, nil
	}
	if err != nil {
		if ts.OVS != "" && tap.Created() {
			bridgeif.SetTAPPersistent(tap, false) // do not leave a TAP we made behind
		}
		return fail(err)
	}
	return &attachedTAP{TAP: tap, att: att}, nil
}

// ControlSocket is the control socket of the instance name, which `cab
// status` reads.
func ControlSocket(name string) string { return filepath.Join(RunDir, name+".sock") }

// PipeSocket is the unix socket where a server takes streams from `cab
// pipe`, the far end of the ssh:// carrier.
func PipeSocket(name string) string { return filepath.Join(RunDir, name+".pipe") }

// WithDefaultPort appends DefaultPort to a host (or [IPv6] literal) given
// without one.
func WithDefaultPort(hostport string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	h := strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	return net.JoinHostPort(h, strconv.Itoa(DefaultPort))
}

// StableMAC derives a locally administered unicast MAC from a public key
// and a device name.
func StableMAC(id crypto.PublicKey, name string) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte("cab tap mac\x00"))
	h.Write(id[:])
	h.Write([]byte(name))
	sum := h.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}
