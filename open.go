package cab

import (
	"context"
	"crypto/sha256"
	"fmt"
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
//	tap:NAME   a TAP device, created when it does not exist
//
// A TAP that cab creates gets a MAC derived from id (the cable's public
// key) and its name, so that it keeps its MAC across restarts and the
// neighbours' ARP caches stay right.
func OpenPort(spec string, id crypto.PublicKey) (bridgeif.Port, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "tap":
		if arg == "" {
			return nil, fmt.Errorf("port %q: no device name: use tap:NAME, e.g. tap:cab0", spec)
		}
		if strings.Contains(arg, ",") {
			return nil, fmt.Errorf("port %q: options after the device name are not supported yet", spec)
		}
		tap, err := bridgeif.OpenTAP(arg)
		if err != nil {
			return nil, err
		}
		if tap.Created() {
			if err := tap.SetHardwareAddr(StableMAC(id, arg)); err != nil {
				tap.Close()
				return nil, err
			}
		}
		return tap, nil
	default:
		return nil, fmt.Errorf("port %q: unknown kind %q: use tap:NAME", spec, kind)
	}
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
