package cab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
	"cab/transport/udp"
)

// OpenPort opens the local L2 attachment named by spec:
//
//	tap:NAME[,bridge=BR|,ovs=BR][,mtu=N][,offload=off]  a TAP device, created when it does
//	                                      not exist, optionally attached to a
//	                                      Linux bridge or an Open vSwitch bridge
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
	switch kind {
	case "tap":
		return openTAP(spec, arg, id)
	case "vde":
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
		return nil, fmt.Errorf("port %q: unknown kind %q: use tap:NAME, vde:DIR or stdio", spec, kind)
	}
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

// ListenUDP opens the UDP conn a cable sends and receives on. An empty host
// listens on every address, IPv4 and IPv6.
func ListenUDP(host string, port int) (*udp.Conn, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	c, err := udp.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("%w (is another cab running? pick another port with -p)", err)
	}
	return c, nil
}

// UDPDialer returns a Dialer that reaches hostport over conn, resolving the
// name anew before every handshake. A hostport without a port gets
// DefaultPort.
func UDPDialer(conn *udp.Conn, hostport string) (*Dialer, error) {
	hostport = WithDefaultPort(hostport)
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return nil, fmt.Errorf("server address %q: %w", hostport, err)
	}
	return &Dialer{
		Conn: conn,
		Resolve: func() (transport.Addr, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a, err := conn.Resolve(ctx, hostport)
			if err != nil {
				return nil, err
			}
			return a, nil
		},
	}, nil
}

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

// Splice copies frames between two ports until ctx is done or either port
// ends, then closes both. The end of a stream is a clean end (nil).
func Splice(ctx context.Context, a, b bridgeif.Port) error {
	errc := make(chan error, 2)
	pump := func(from, to bridgeif.Port) {
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, bridgeif.MaxFrame+64)
		}
		sizes := make([]int, batch)
		out := make([][]byte, 0, batch)
		for {
			n, err := from.ReadBatch(bufs, sizes, 0)
			if err != nil {
				errc <- err
				return
			}
			out = out[:0]
			for i := 0; i < n; i++ {
				out = append(out, bufs[i][:sizes[i]])
			}
			if _, err := to.WriteBatch(out, 0); err != nil {
				errc <- err
				return
			}
		}
	}
	go pump(a, b)
	go pump(b, a)
	var err error
	pending := 2
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	a.Close()
	b.Close()
	for ; pending > 0; pending-- {
		<-errc
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
