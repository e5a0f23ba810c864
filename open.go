package cab

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"cab/bridgeif"
	"cab/transport"
	"cab/transport/udp"
)

// OpenPort opens the local L2 attachment named by spec:
//
//	tap:NAME   a TAP device, created when it does not exist
func OpenPort(spec string) (bridgeif.Port, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "tap":
		if arg == "" {
			return nil, fmt.Errorf("port %q: no device name: use tap:NAME, e.g. tap:cab0", spec)
		}
		if strings.Contains(arg, ",") {
			return nil, fmt.Errorf("port %q: options after the device name are not supported yet", spec)
		}
		return bridgeif.OpenTAP(arg)
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
