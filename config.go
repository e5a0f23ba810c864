package cab

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
)

// Config is the configuration of one Cable. The zero value of every field
// means the documented default.
type Config struct {
	// PrivateKey is the cable's static key. Required.
	PrivateKey crypto.PrivateKey

	// PSK, when set, is mixed into every handshake as a pre-shared key
	// (defence in depth, or the only secret in PSK-only mode).
	PSK *crypto.Secret

	// Responder makes the cable accept handshakes from peers that dial
	// in (a server). A cable that is not a responder ignores initiations.
	Responder bool

	// Peers are the remote cabs this cable knows by public key. A peer
	// with a Dial is dialled by this cable (a client's server); the others
	// dial in.
	Peers []PeerConfig

	// AllowAny makes a responder accept any initiator that completes the
	// handshake. It is only safe when a PSK is set: then the PSK
	// authenticates the peer (PSK-only mode). New refuses AllowAny
	// without a PSK.
	AllowAny bool

	// Allow, when set, is consulted for an initiator that is not among
	// Peers; it returns the peer's name and whether it may connect. It lets
	// a server pick up a changed allow file without a restart.
	Allow func(crypto.PublicKey) (name string, ok bool)

	// AllowedSegments, when set, returns the named segments a key that
	// Allow lets in may join (the allow file's segments= column). It is
	// asked again as often as Allow.
	AllowedSegments func(crypto.PublicKey) []string

	// Segments are the cable's named segments (segment.go), beside the
	// default one, its port. On a client they are the segments it asks
	// its server to join.
	Segments []SegmentConfig

	// Keepalive is the interval of keepalives to peers this cable dials,
	// which keeps NAT mappings open, and the basis of the time after which
	// a silent peer is declared down (three intervals plus RekeyTimeout).
	// Default 25s.
	Keepalive time.Duration

	// DeadAfter, when set, is fast failure detection: a peer that has
	// said nothing showing it hears this cable for DeadAfter, while this
	// cable asked, is declared down. The cable asks (a keepalive with
	// crypto.FlagAsk, which the peer answers at once) when it has heard
	// nothing from an up peer for a third of DeadAfter (the responder: a
	// half), and again every sixth until an answer comes, so an idle link
	// costs one ask and one answer every third to half of DeadAfter, and
	// a link with traffic both ways nothing. It replaces the default
	// detection (5 s of unanswered packets on the dialing side; three
	// keepalive intervals plus 5 s of silence on the responder). From
	// MinDeadAfter to MaxDeadAfter; 0: the default detection.
	DeadAfter time.Duration

	// Carrier says what the cable does with its port's carrier, when the
	// port has one (bridgeif.Carrier: a TAP). CarrierAuto, the zero value,
	// is CarrierFollow for a cable that is not a responder (a client) and
	// CarrierOn for a responder (a server).
	Carrier CarrierMode

	// Isolate stops frames from one peer from being forwarded to another:
	// peers reach only this cable's port.
	Isolate bool

	// FDBMaxAge is how long a learned MAC is remembered without a frame
	// from it. Default 300s.
	FDBMaxAge time.Duration

	// MaxMACs caps the MACs learned behind one peer, so that no peer can
	// fill the table. Default 1024.
	MaxMACs int

	// FloodRate caps the frames per second one source may have flooded
	// (broadcast, multicast, unknown unicast): each peer, and the cable's
	// own port, so that a client drops a storm from its own side before it
	// seals it, and a server the storm of a client that does not. Default
	// 2000; negative: no limit.
	FloodRate int

	// FloodBudget caps the copies per second the cable makes of frames
	// it floods to more than one place (frames × the peers and port each
	// goes to), shared fairly among the sources (the peers and the port):
	// a source within its share gets through, and one beyond it only with
	// what the others leave idle. A tenth of a second's budget may go at
	// once. It keeps a hub's output within what it can send, however many
	// clients flood at their FloodRate. Default DefaultFloodBudget;
	// negative: no limit.
	FloodBudget int

	// MSSClamp sets the TCP MSS clamping of SYNs entering and leaving the
	// cable: 0 (auto) clamps to what fits one packet on the smallest path
	// to a peer that is up, a negative value turns clamping off, and a
	// positive one is the IPv4 MSS to clamp to (IPv6 gets 20 less).
	MSSClamp int

	// DropBPDU drops spanning-tree BPDUs instead of passing them.
	DropBPDU bool

	// PortPerPeer, when set, gives every peer a port of its own, opened
	// when the peer comes up and closed when it goes down: frames from the
	// peer go to its port and frames from its port go to the peer, with no
	// switching by the cable (a vde_switch does it, one switch port per
	// client, as vde_cryptcab does). name is the peer's name.
	PortPerPeer func(name string) (bridgeif.Port, error)

	// MaxPeers bounds the number of peers a PSK-only responder creates
	// for initiators it did not know. Default 1024.
	MaxPeers int

	// CryptoWorkers is how many goroutines help the cable's loops seal and
	// open large batches, in addition to the loops themselves (frames keep
	// their order). Default: one fewer than GOMAXPROCS on four or more
	// cores, none below; negative: none.
	CryptoWorkers int

	// Logger receives the cable's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) cryptoWorkers() int {
	switch {
	case c.CryptoWorkers < 0:
		return 0
	case c.CryptoWorkers == 0:
		return defaultCryptoWorkers()
	}
	return c.CryptoWorkers
}

// PeerConfig names one remote cab.
type PeerConfig struct {
	// Name is how logs and status show the peer. Default: the short form
	// of the public key.
	Name string
	// PublicKey identifies the peer. Required.
	PublicKey crypto.PublicKey
	// Dial, when set, makes this cable initiate handshakes to the peer.
	Dial *Dialer
	// Fallback lists more ways to reach the peer, tried in order after
	// Dial when handshakes over the current one do not complete (UDP
	// blocked: TCP, then SSH). While the cable runs on a fallback, a
	// handshake over Dial is tried every preferRecheck, and the cable
	// returns to Dial once one completes.
	Fallback []*Dialer
	// PSK, when set, is this peer's pre-shared key instead of Config.PSK.
	PSK *crypto.Secret
	// Keepalive, when set, is this peer's keepalive interval instead of
	// Config.Keepalive.
	Keepalive time.Duration
	// AllowedMACs and AllowedVLANs, when set, are the only source MACs
	// and VLANs (0: untagged) that frames from this peer may carry; other
	// frames are dropped and counted ("not allowed").
	AllowedMACs  []net.HardwareAddr
	AllowedVLANs []uint16
	// Segments are the named segments a peer that dials in may join (a
	// segment with a PSK of its own takes whoever proves it holds it).
	Segments []string
}

// A Dialer says where a peer is reached: over which conn, at which addr.
// Resolve is called before each handshake attempt, so a host name that
// changes address is followed.
type Dialer struct {
	Conn    transport.Conn
	Resolve func() (transport.Addr, error)
}

// A CarrierMode is what a cable does with its port's carrier.
type CarrierMode int

const (
	// CarrierAuto follows the peers on a client, and leaves the carrier
	// on for a server.
	CarrierAuto CarrierMode = iota
	// CarrierFollow gives the port carrier only while at least one peer
	// is up, as a real cable's link light: a bond, a bridge's spanning
	// tree or a routing daemon on the port sees the far end go away.
	CarrierFollow
	// CarrierOn leaves the carrier on: the port is up whatever the peers.
	CarrierOn
)

// ParseCarrierMode parses "follow", "on" or "" (auto).
func ParseCarrierMode(s string) (CarrierMode, error) {
	switch s {
	case "":
		return CarrierAuto, nil
	case "follow":
		return CarrierFollow, nil
	case "on":
		return CarrierOn, nil
	}
	return CarrierAuto, fmt.Errorf("carrier %q: use follow or on", s)
}

// carrierFollows reports whether the cable drives its port's carrier.
func (c *Config) carrierFollows() bool {
	return c.Carrier == CarrierFollow || c.Carrier == CarrierAuto && !c.Responder
}

// Bounds of Config.DeadAfter: below MinDeadAfter a lost packet or two and
// a scheduler hiccup would take a live peer down; above MaxDeadAfter the
// default detection is as quick.
const (
	MinDeadAfter = 300 * time.Millisecond
	MaxDeadAfter = 60 * time.Second
)

// Defaults.
const (
	DefaultKeepalive = 25 * time.Second
	DefaultMaxPeers  = 1024
	DefaultPort      = 7667
)

func (c *Config) keepalive() time.Duration {
	if c.Keepalive > 0 {
		return c.Keepalive
	}
	return DefaultKeepalive
}

func (c *Config) fdbMaxAge() time.Duration {
	if c.FDBMaxAge > 0 {
		return c.FDBMaxAge
	}
	return defaultFDBMaxAge
}

func (c *Config) maxMACs() int {
	if c.MaxMACs > 0 {
		return c.MaxMACs
	}
	return defaultFDBMaxPerPeer
}

// DefaultFloodRate is the default of Config.FloodRate.
const DefaultFloodRate = 2000

// DefaultFloodBudget is the default of Config.FloodBudget, in copies a
// second.
const DefaultFloodBudget = 10000

func (c *Config) floodBudget() int {
	switch {
	case c.FloodBudget > 0:
		return c.FloodBudget
	case c.FloodBudget < 0:
		return 0
	}
	return DefaultFloodBudget
}

func (c *Config) floodRate() int {
	switch {
	case c.FloodRate > 0:
		return c.FloodRate
	case c.FloodRate < 0:
		return 0
	}
	return DefaultFloodRate
}

// clampFrameMTU returns the frame MTU the clamp works to, or 0 for none;
// auto is the frame MTU of the smallest wire MTU among the peers.
func (c *Config) clampFrameMTU(minWire WireMTU) FrameMTU {
	switch {
	case c.MSSClamp < 0:
		return 0
	case c.MSSClamp > 0:
		return MSS(c.MSSClamp).Frame()
	}
	return minWire.Frame()
}

func (c *Config) maxPeers() int {
	if c.MaxPeers > 0 {
		return c.MaxPeers
	}
	return DefaultMaxPeers
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Validate checks the cross-field rules of the configuration.
func (c *Config) Validate() error {
	if c.PrivateKey == (crypto.PrivateKey{}) {
		return errors.New("config: no private key")
	}
	if c.AllowAny && c.PSK == nil {
		return errors.New("config: accepting any client needs a pre-shared key (--psk), or list the allowed public keys (--allow)")
	}
	if c.AllowAny && !c.Responder {
		return errors.New("config: AllowAny only makes sense on a responder")
	}
	if c.DeadAfter != 0 && (c.DeadAfter < MinDeadAfter || c.DeadAfter > MaxDeadAfter) {
		return fmt.Errorf("config: dead-after %v: use %v to %v, or 0 for the default detection", c.DeadAfter, MinDeadAfter, MaxDeadAfter)
	}
	if c.Carrier < CarrierAuto || c.Carrier > CarrierOn {
		return fmt.Errorf("config: carrier mode %d unknown", c.Carrier)
	}
	seen := map[crypto.PublicKey]bool{}
	for i, p := range c.Peers {
		if p.PublicKey == (crypto.PublicKey{}) {
			return fmt.Errorf("config: peer %d (%q) has no public key", i+1, p.Name)
		}
		if !p.PublicKey.Canonical() {
			return fmt.Errorf("config: peer %q: %w", p.Name, crypto.ErrNonCanonical)
		}
		if seen[p.PublicKey] {
			return fmt.Errorf("config: peer %q: public key %s listed twice", p.Name, p.PublicKey.Short())
		}
		seen[p.PublicKey] = true
		if p.PublicKey == c.PrivateKey.Public() {
			return fmt.Errorf("config: peer %q has this cable's own public key", p.Name)
		}
		if p.Dial != nil && (p.Dial.Conn == nil || p.Dial.Resolve == nil) {
			return fmt.Errorf("config: peer %q: dialer needs a conn and a resolver", p.Name)
		}
	}
	return nil
}
