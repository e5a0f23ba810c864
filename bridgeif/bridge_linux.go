package bridgeif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Verified: run on Linux by attach_linux_test.go against a real Linux bridge
// and a real Open vSwitch (userspace datapath) in network namespaces.

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
