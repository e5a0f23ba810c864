package transport

import (
	"net/netip"
	"time"
)

// Capabilities: optional interfaces a Conn may implement. The cable asks
// for each with a type assertion and does without when a conn lacks it, so
// a new carrier needs only Conn to work; each capability makes it work
// better. Every carrier has `var _` guards for the ones it implements.

// Schemer is a Conn that names its URL scheme ("udp", "tcp", "quic",
// "dns"), shown by cab status and in logs. Implemented by every carrier;
// without it the transport shows as "".
type Schemer interface {
	Scheme() string
}

// PathMTUer is a Conn that knows the largest packet it can send to an Addr
// without fragmentation (0: unknown), from what the OS or the carrier
// learned: UDP (the kernel's path MTU), QUIC (its datagram limit), stream
// and DNS carriers (their fixed limit). Without it, the cable assumes a
// 1500-byte underlay until its own probes (plpmtud.go) say more.
type PathMTUer interface {
	PathMTU(Addr) int
}

// SelfProber is a Conn whose PathMTU the carrier confirms itself (QUIC:
// its path MTU discovery raises the datagram limit only for sizes the peer
// acknowledged), so the cable's own probes would add nothing and are not
// sent. Without it, the cable probes.
type SelfProber interface {
	ProbesPathMTU() bool
}

// RTTer is a Conn that measures the round-trip time to an Addr (0:
// unknown): QUIC. Without it, cab status shows no RTT for the path.
type RTTer interface {
	RTT(Addr) time.Duration
}

// DropCounter is a Conn that counts the packets it dropped itself, by
// reason ("queue_full"): QUIC, the DNS tunnel. cab status shows the counts
// prefixed with the scheme; without it, such drops are invisible.
type DropCounter interface {
	DropCounts() map[string]uint64
}

// PathStats describes how a path to one Addr behaves, for conns that know
// (the DNS tunnel).
type PathStats struct {
	QueriesPerSecond float64       `json:"queries_per_sec"`
	Loss             float64       `json:"loss"` // fraction of exchanges lost, 0..1
	RTT              time.Duration `json:"rtt_ns"`
	Queries          uint64        `json:"queries"`
}

// PathStatser is a Conn that reports PathStats for its Addrs: the DNS
// tunnel, whose query rate and loss say more than an RTT. Without it, cab
// status shows none.
type PathStatser interface {
	PathStats(Addr) (PathStats, bool)
}

// QueueDelayer is a Conn that knows how long the packets its last
// ReadBatch returned had waited to be read: the age of the oldest, from
// the kernel's receive timestamps (UDP). The cable sheds load by it: while
// its reading falls behind, the senders above their fair share lose
// packets before they are opened, and data that waited longer than 100 ms
// (as long as the stream carriers let a packet wait) is dropped unopened,
// so that no backlog is replayed late.
// Only the reader may call it, after ReadBatch. Without it, the cable
// reads everything in order.
type QueueDelayer interface {
	QueueDelay() time.Duration
}

// Hoster is an Addr that names the host behind it: UDP. The cable's
// handshake rate limits and its table of unproven peers count per host
// (an IPv4 address, an IPv6 /64), so one host cannot spend another's share
// by changing ports. Without it, each Addr counts on its own: a stream or
// QUIC connection, which those carriers cap per host.
type Hoster interface {
	Host() netip.Addr
}

// Authenticator is a Conn that keeps what it gives strangers small until
// the cable vouches for an Addr: the server carriers (stream and QUIC
// close a connection not vouched for within a few seconds; the DNS tunnel
// keeps a session on probation, with a small quota, until then). The
// cable calls Authenticated when a packet from the Addr on this conn
// opened with a session of a completed handshake (on a path change and on
// each confirmed handshake, not per packet); the call is cheap and may
// repeat. Without it, the conn treats every Addr alike.
type Authenticator interface {
	Authenticated(a Addr)
}

// ReachChecker is a Conn that can say why an Addr does not answer, as the
// OS sees it, for the cable's warning when handshakes go unanswered: UDP
// (an empty datagram from a connected socket, to which an ICMP port
// unreachable comes back as ECONNREFUSED), stream and QUIC clients (why
// the last dial failed, or the last connection ended: connection refused,
// ssh's own complaint). It returns nil when it knows of nothing wrong, and
// may block for half a second. Without it, the warning lists the likely
// causes alone.
type ReachChecker interface {
	CheckReach(Addr) error
}
