package cab

import (
	"sync"
	"sync/atomic"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/internal/ratelimit"
	"cab/transport"
)

// session binds a crypto session to the peer it is with.
type session struct {
	*crypto.Session
	peer *peer
}

// path is where a peer is reached.
type path struct {
	conn transport.Conn
	addr transport.Addr
}

// peer is one remote cab.
type peer struct {
	nm      atomic.Pointer[string] // name(); the allow file or a reload may change it
	key     crypto.PublicKey
	conf    PeerConfig     // as configured (zero for a dynamic peer)
	psk     *crypto.Secret // mixed into its handshakes; nil: none
	dial    *Dialer        // the preferred way to reach the peer; nil on the responder side
	dialers []*Dialer      // dial, then the fallbacks
	dynamic bool           // created for an initiator that was not configured
	src     source         // where a dynamic peer's first initiation came from
	removed atomic.Bool    // taken out of the configuration by SetPeers

	hs       handshakeState // sessions and handshakes in flight
	route    routeState     // where the peer is, and how large a packet gets there
	live     liveness       // up or down, and when packets last went each way
	policy   policy         // what the peer may send in
	own      ownPortState   // the peer's own port (Config.PortPerPeer)
	dup      dupState       // a second client with this key (diagnose.go)
	stats    peerStats
	segState // its named segments (segment.go)
}

// handshakeState is a peer's sessions and the handshakes in flight. cur is
// read without the lock on every packet; the rest is guarded by mu.
type handshakeState struct {
	cur atomic.Pointer[session] // the session frames are sealed with

	mu          sync.Mutex        // guards the following fields
	prev, next  *session          // prev: still accepted; next: responder side, awaiting confirmation
	nextOld     *session          // the unconfirmed session before next: on a slow path the initiator may complete that one
	initiator   *crypto.Initiator // the newest initiation in flight
	prevInit    *crypto.Initiator // the one before: its answer is still welcome on a slow path
	nextAttempt time.Time
	attempts    int
	wentStale   bool // the session went stale; no handshake completed since
	lastInitTS  uint64
	dialing     bool
	lastPrefer  time.Time        // the last handshake tried over dial while on a fallback
	dialAddrs   []transport.Addr // where each dialer's last handshake went

	// Unanswered handshakes, for the warning (diagnose.go).
	tries         int            // initiations since the last handshake completed
	firstTry      time.Time      // the first of them
	lastTo        transport.Addr // where the newest went
	lastVia       int            // over which dialer
	nextWarn      time.Time      // when the warning may come again
	warnEvery     time.Duration
	warned        bool
	lastBadAnswer int64      // when an answer that did not authenticate was last logged
	probe         probeState // path MTU probes (plpmtud.go)

	jar crypto.CookieJar // the responder's cookie, while fresh (cookie.go)
}

// routeState is where a peer is reached and what fits the way there.
type routeState struct {
	path       atomic.Pointer[path]
	active     atomic.Int32  // index in dialers of the transport in use
	wireMTU    atomic.Int64  // largest packet on the peer's path
	fragID     atomic.Uint32 // id of the last frame sent in fragments
	fragmented atomic.Uint64 // frames sent in fragments
	reasm      reassembly    // frames from the peer in fragments
}

// liveness is whether a peer is up, and the times (unix nanoseconds) the
// timers judge it by.
type liveness struct {
	up            atomic.Bool
	upSince       atomic.Int64
	lastRecv      atomic.Int64 // the last authenticated packet
	lastSent      atomic.Int64 // the last data or keepalive sent
	unanswered    atomic.Int64 // first send since the last receive, 0 if none
	lastHeard     atomic.Int64 // the last packet that said the peer hears us (FlagHeard), or the handshake
	lastAsk       atomic.Int64 // the last ask sent (FlagAsk; Config.DeadAfter)
	lastAnswer    atomic.Int64 // the last answer to the peer's ask
	recvData      atomic.Bool  // a packet arrived that wants a passive keepalive
	lastHandshake atomic.Int64
}

// policy is what a peer may send into the cable.
type policy struct {
	macsOK  map[[6]byte]bool // source MACs allowed; nil: any
	vlansOK map[uint16]bool  // VLANs allowed; nil: any
	floodMu sync.Mutex       // guards flood
	flood   ratelimit.Bucket // frames this peer may have flooded
	share   ratelimit.Bucket // its share of the cable's flood budget; guarded by the budget's lock
}

// ownPortState is a peer's own port, while it has one.
type ownPortState struct {
	port    atomic.Pointer[ownPort]
	opening atomic.Bool // being opened
}

// peerStats are a peer's counters, shown by Status.
type peerStats struct {
	rxFrames, rxBytes, txFrames, txBytes atomic.Uint64
	handshakes                           atomic.Uint64
	drops                                [numDropReasons]atomic.Uint64
}

// configuredPeer makes the peer that pc describes.
func (c *Cable) configuredPeer(pc PeerConfig) *peer {
	if pc.Name == "" {
		pc.Name = pc.PublicKey.Short()
	}
	p := c.newPeer(pc.Name, pc.PublicKey, pc.Dial)
	p.conf = pc
	if pc.Segments != nil {
		p.allowed.Store(&pc.Segments)
	}
	if pc.Dial != nil {
		p.dialers = append([]*Dialer{pc.Dial}, pc.Fallback...)
	}
	if pc.PSK != nil {
		p.psk = pc.PSK
	}
	if len(pc.AllowedMACs) > 0 {
		p.policy.macsOK = map[[6]byte]bool{}
		for _, m := range pc.AllowedMACs {
			var k [6]byte
			copy(k[:], m)
			p.policy.macsOK[k] = true
		}
	}
	if len(pc.AllowedVLANs) > 0 {
		p.policy.vlansOK = map[uint16]bool{}
		for _, v := range pc.AllowedVLANs {
			p.policy.vlansOK[v] = true
		}
	}
	return p
}

// allows reports whether a frame from p with source src may enter.
func (p *peer) allows(src macKey) bool {
	return (p.policy.macsOK == nil || p.policy.macsOK[src.mac]) && (p.policy.vlansOK == nil || p.policy.vlansOK[src.vlan])
}

// keepalive is p's keepalive interval.
func (c *Cable) keepaliveOf(p *peer) time.Duration {
	if p.conf.Keepalive > 0 {
		return p.conf.Keepalive
	}
	return c.cfg.keepalive()
}

func (c *Cable) newPeer(name string, key crypto.PublicKey, dial *Dialer) *peer {
	p := &peer{key: key, dial: dial, psk: c.cfg.PSK}
	p.nm.Store(&name)
	p.route.wireMTU.Store(int64(defaultWireMTU))
	p.route.reasm.total = &c.inReasm
	p.noDefault.Store(!c.hasDefault())
	return p
}

// name is how logs and status show p.
func (p *peer) name() string {
	if n := p.nm.Load(); n != nil {
		return *n
	}
	return ""
}

// rename gives p a new name, for logs and status from now on.
func (c *Cable) rename(p *peer, name string) {
	if old := p.name(); old != name {
		p.nm.Store(&name)
		c.log.Info("peer renamed", "peer", name, "was", old, "key", p.key.Short())
	}
}

// flags returns the header flags of a packet to p sent at now: FlagHeard
// when p was heard from within heardWindow.
func (p *peer) flags(now int64) byte {
	if now-p.live.lastRecv.Load() < int64(heardWindow) {
		return crypto.FlagHeard
	}
	return 0
}

// heard records that p said, at now, that it hears us: a packet with
// FlagHeard, or a completed handshake.
func (p *peer) heard(now int64) {
	p.live.unanswered.Store(0)
	p.live.lastHeard.Store(now)
}

func (p *peer) noteSent(now int64) {
	p.live.lastSent.Store(now)
	p.live.unanswered.CompareAndSwap(0, now)
}

// setUp marks p up or down and logs the change. Going down forgets the
// MACs learned behind p. The first peer up and the last peer down move the
// port's carrier (carrier.go).
func (c *Cable) setUp(p *peer, up bool, reason string) {
	if !p.live.up.CompareAndSwap(!up, up) {
		return
	}
	if up {
		p.live.upSince.Store(time.Now().UnixNano())
		pt := p.route.path.Load()
		addr := ""
		if pt != nil {
			addr = pt.addr.String()
		}
		c.log.Info("peer up", "peer", p.name(), "key", p.key.Short(), "addr", addr)
		c.refreshMinWire()
		if c.cfg.PortPerPeer != nil && !c.closing.Load() {
			c.openOwnPort(p)
		}
		c.peerUpChanged(p, true)
		return
	}
	c.forgetMACs(p)
	c.closeOwnPort(p)
	c.refreshMinWire()
	c.log.Info("peer down", "peer", p.name(), "reason", reason)
	c.peerUpChanged(p, false)
}

// ownPort is a port opened for one peer alone (Config.PortPerPeer).
type ownPort struct {
	port bridgeif.Port
}

// openOwnPort opens p's own port and starts its loop. It runs on its own
// goroutine, as opening may block (a switch that is slow to answer).
func (c *Cable) openOwnPort(p *peer) {
	if !p.own.opening.CompareAndSwap(false, true) {
		return
	}
	c.ownWG.Add(1)
	go func() {
		defer c.ownWG.Done()
		defer p.own.opening.Store(false)
		if p.own.port.Load() != nil {
			return
		}
		port, err := c.cfg.PortPerPeer(p.name())
		if err != nil {
			c.log.Warn("cannot open the peer's own port", "peer", p.name(), "err", err)
			return
		}
		op := &ownPort{port: port}
		p.own.port.Store(op)
		if !p.live.up.Load() || c.closing.Load() { // went down meanwhile
			c.closeOwnPort(p)
		}
		c.log.Info("peer port open", "peer", p.name())
		if err := c.portLoop(c.def, port, p); err != nil {
			c.log.Warn("peer port failed", "peer", p.name(), "err", err)
		}
	}()
}

// closeOwnPort closes p's own port, if it has one.
func (c *Cable) closeOwnPort(p *peer) {
	if op := p.own.port.Swap(nil); op != nil {
		op.port.Close()
	}
}
