package bridgeif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TAPSpec is the argument of a tap: port:
// NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=on|off][,carrier=follow|on].
type TAPSpec struct {
	Name   string
	Bridge string // a Linux bridge to join
	OVS    string // an Open vSwitch bridge to join
	MTU    int    // 0: leave the MTU alone
	// NoOffload opens the TAP without segmentation and checksum offloads
	// (offload=off), one frame per system call.
	NoOffload bool
	// Carrier is "follow" (the TAP has carrier only while a peer is up),
	// "on" (always carrier), or "" when the spec does not say and the
	// role decides.
	Carrier string
}

// ParseTAPSpec parses NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=on|off][,carrier=follow|on].
func ParseTAPSpec(s string) (TAPSpec, error) {
	parts := strings.Split(s, ",")
	ts := TAPSpec{Name: parts[0]}
	if ts.Name == "" {
		return ts, errors.New("no device name: use tap:NAME, e.g. tap:cab0")
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || v == "" {
			return ts, fmt.Errorf("option %q: use bridge=BR, ovs=BR, mtu=N, offload=off or carrier=follow|on", p)
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
		case "carrier":
			if v != "follow" && v != "on" {
				return ts, fmt.Errorf("carrier=%s: use carrier=follow (carrier only while a peer is up) or carrier=on", v)
			}
			ts.Carrier = v
		default:
			return ts, fmt.Errorf("unknown option %q: use bridge=BR, ovs=BR, mtu=N, offload=off or carrier=follow|on", k)
		}
	}
	if ts.Bridge != "" && ts.OVS != "" {
		return ts, errors.New("bridge= and ovs= together: a TAP joins one bridge")
	}
	return ts, nil
}

// An Attachment is a device's membership of a bridge.
type Attachment interface {
	// Detach takes the device out of the bridge.
	Detach() error
}

type linuxBridge struct{ dev, br string }

// AttachBridge makes dev a port of the Linux bridge br, over netlink.
func AttachBridge(dev, br string) (Attachment, error) {
	brl, err := netlink.LinkByName(br)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("bridge %s: no such bridge: create it with ip link add %s type bridge", br, br)
		}
		return nil, fmt.Errorf("bridge %s: %w", br, err)
	}
	if _, ok := brl.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("bridge %s: it is a %s device, not a bridge", br, brl.Type())
	}
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: device %s: %w", br, dev, err)
	}
	if err := netlink.LinkSetMaster(l, brl); err != nil {
		return nil, fmt.Errorf("bridge %s: add %s: %w", br, dev, err)
	}
	return &linuxBridge{dev: dev, br: br}, nil
}

func (b *linuxBridge) Detach() error {
	l, err := netlink.LinkByName(b.dev)
	if err != nil {
		return nil // the device is gone, and with it the membership
	}
	if err := netlink.LinkSetNoMaster(l); err != nil {
		return fmt.Errorf("bridge %s: remove %s: %w", b.br, b.dev, err)
	}
	return nil
}

type ovsPort struct{ dev, br string }

// ovsVsctl runs ovs-vsctl with args, against $OVS_DB_SOCK when set.
func ovsVsctl(args ...string) error {
	if _, err := exec.LookPath("ovs-vsctl"); err != nil {
		return errors.New("ovs-vsctl not found: install openvswitch-switch")
	}
	full := []string{"--timeout=10"}
	if db := os.Getenv("OVS_DB_SOCK"); db != "" {
		full = append(full, "--db=unix:"+db)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ovs-vsctl", append(full, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		op := strings.Join(args, " ")
		switch {
		case strings.Contains(msg, "database connection failed"):
			return fmt.Errorf("ovs-vsctl %s: %s: is ovsdb-server running? (%w)", op, msg, err)
		case msg == "" && (ctx.Err() != nil || strings.Contains(err.Error(), "alarm")):
			return fmt.Errorf("ovs-vsctl %s: no answer within its timeout: is ovs-vswitchd running? (%w)", op, err)
		}
		return fmt.Errorf("ovs-vsctl %s: %s: %w", op, msg, err)
	}
	return nil
}

// AttachOVS adds dev to the Open vSwitch bridge br (ovs-vsctl --may-exist
// add-port); Detach removes it. The environment variable OVS_DB_SOCK names
// a database socket other than the default.
func AttachOVS(dev, br string) (Attachment, error) {
	if err := ovsVsctl("--may-exist", "add-port", br, dev); err != nil {
		return nil, err
	}
	return &ovsPort{dev: dev, br: br}, nil
}

func (o *ovsPort) Detach() error { return ovsVsctl("--if-exists", "del-port", o.br, o.dev) }

// SetTAPPersistent makes t outlive cab (TUNSETPERSIST), so that cab reuses
// the same device after a restart: Open vSwitch does not pick up a TAP that
// was removed and created again.
func SetTAPPersistent(t *TAP, on bool) error {
	v := 0
	if on {
		v = 1
	}
	var err error
	cerr := t.rc.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, v) })
	if cerr != nil {
		return fmt.Errorf("tap %q: persist: %w", t.name, cerr)
	}
	if err != nil {
		return fmt.Errorf("tap %q: persist: %w", t.name, err)
	}
	return nil
}
