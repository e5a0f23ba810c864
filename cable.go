package cab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
)

// A Cable joins one Port to its peers over one or more Conns and switches
// frames between them. A client is a cable with one peer that it dials; a
// server is a responder cable that peers dial in to.
type Cable struct {
	cfg       Config
	log       *slog.Logger
	port      bridgeif.Port
	conns     []transport.Conn
	responder *crypto.Responder
	ciphers   []crypto.Cipher
	fdb       *fdb
	limiter   *rateLimiter
	kick      chan struct{} // wakes the timer loop early

	peers atomic.Pointer[[]*peer] // read-mostly snapshot of every peer

	pmu   sync.Mutex // guards byKey and writes of peers
	byKey map[crypto.PublicKey]*peer

	index sync.Map // local index → *session; read without a lock per packet

	imu     sync.Mutex       // serialises writes of index, and guards pending
	pending map[uint32]*peer // local index of an initiation in flight

	closing atomic.Bool    // Run is shutting down
	ownWG   sync.WaitGroup // loops of the peers' own ports

	drops   [numDropReasons]atomic.Uint64 // drops not attributable to a peer
	clamped atomic.Uint64                 // TCP SYNs whose MSS was lowered
	inReasm atomic.Int64                  // frames in reassembly, all peers
	minWire atomic.Int64                  // smallest wire MTU of the peers, for the clamp

	pool *cryptoPool // crypto workers, while Run runs

	debugGate atomic.Int64 // rate limit of per-packet debug logs
	lastTick  atomic.Int64 // when the timer loop last ran, unix nanoseconds
}

// Healthy reports whether the cable's loops are running: Run has not
// returned and the timer loop ran within the last 5 seconds. A watchdog
// pets only a healthy cable.
func (c *Cable) Healthy() bool {
	return !c.closing.Load() && time.Now().UnixNano()-c.lastTick.Load() < int64(5*time.Second)
}

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
	name    string
	key     crypto.PublicKey
	dial    *Dialer   // the preferred way to reach the peer; nil on the responder side
	dialers []*Dialer // dial, then the fallbacks
	active  atomic.Int32
	dynamic bool        // created for an initiator that was not configured
	removed atomic.Bool // taken out of the configuration by SetPeers
	conf    PeerConfig  // as configured (zero for a dynamic peer)
	psk     *crypto.Secret
	allow   map[macKey]bool // source MAC and VLAN pairs allowed; nil: any
	macsOK  map[[6]byte]bool
	vlansOK map[uint16]bool

	path atomic.Pointer[path]
	cur  atomic.Pointer[session] // the session frames are sealed with

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
	lastPrefer  time.Time // the last handshake tried over dial while on a fallback
	probe       probeState

	up      atomic.Bool
	upSince atomic.Int64 // unix nanoseconds

	lastRecv      atomic.Int64 // unix nanoseconds of the last authenticated packet
	lastSent      atomic.Int64 // ... of the last data or keepalive sent
	unanswered    atomic.Int64 // first send since the last receive, 0 if none
	recvData      atomic.Bool  // a packet arrived that wants a passive keepalive
	lastHandshake atomic.Int64

	macs int // learned MACs; guarded by fdb.mu

	wireMTU    atomic.Int64  // largest packet on the peer's path
	fragID     atomic.Uint32 // id of the last frame sent in fragments
	fragmented atomic.Uint64 // frames sent in fragments
	reasm      reassembly    // frames from the peer in fragments

	own     atomic.Pointer[ownPort] // the peer's own port (Config.PortPerPeer)
	opening atomic.Bool             // an own port is being opened

	floodMu sync.Mutex // guards flood
	flood   bucket     // frames this peer may have flooded

	rxFrames, rxBytes, txFrames, txBytes atomic.Uint64
	handshakes                           atomic.Uint64
	drops                                [numDropReasons]atomic.Uint64
}

// atomicCounter is one counter of drops.
type atomicCounter = atomic.Uint64

// dropReason says why a packet or frame was dropped.
type dropReason int

const (
	dropRunt dropReason = iota
	dropNoSession
	dropAuth
	dropReplay
	dropTooBig
	dropRateLimited
	dropQueueFull
	dropNotAllowed
	dropHandshakeReplay
	dropMACLimit
	dropIsolated
	dropMACConflict
	dropBPDU
	dropFragment
	numDropReasons
)

var dropNames = [numDropReasons]string{
	dropRunt:            "runt",
	dropNoSession:       "no session",
	dropAuth:            "auth",
	dropReplay:          "replay",
	dropTooBig:          "too big",
	dropRateLimited:     "rate limited",
	dropQueueFull:       "queue full",
	dropNotAllowed:      "not allowed",
	dropHandshakeReplay: "handshake replay",
	dropMACLimit:        "mac limit",
	dropIsolated:        "isolated",
	dropMACConflict:     "mac conflict",
	dropBPDU:            "bpdu",
	dropFragment:        "fragment",
}

func (r dropReason) String() string { return dropNames[r] }

// Timing of the cable's own liveness checks (the rest are crypto's).
const (
	// passiveKeepalive is how soon a cable answers a packet that wants an
	// answer when it has sent nothing since.
	passiveKeepalive = 2 * time.Second
	// staleAfter is how long sent packets may go unanswered before the
	// dialing side considers the session dead and handshakes again.
	staleAfter = crypto.RekeyTimeout
	// heardWindow is how recently a cable must have heard from a peer to
	// tell it so (FlagHeard): longer than the passive keepalive and a
	// tick, so that an idle link's answers carry it, and short, so that
	// the peer soon sees its packets go unanswered when they stop
	// arriving.
	heardWindow = passiveKeepalive + time.Second
	// fallbackAfter is how many handshake attempts over one transport
	// go unanswered before the next transport is tried (about 3 s with
	// the backoff), and preferRecheck how often a cable on a fallback
	// tries the preferred transport again.
	fallbackAfter = 2
	preferRecheck = 10 * time.Second
	// maxBackoff caps the interval between handshake attempts.
	maxBackoff = 8 * time.Second
	// tick is the timer loop's period.
	tick = 250 * time.Millisecond
	// pathMTURecheck is how often the kernel's path MTU is read again.
	pathMTURecheck = 5 * time.Second
	// batch is how many frames or packets one read takes at most.
	batch = 64
)

// New makes a Cable of port and conns. Run takes ownership of both and
// closes them when it returns.
func New(cfg Config, port bridgeif.Port, conns []transport.Conn) (*Cable, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if port == nil && cfg.PortPerPeer == nil {
		return nil, errors.New("cable: no port (and no port per peer)")
	}
	c := &Cable{
		cfg:     cfg,
		log:     cfg.logger(),
		port:    port,
		conns:   conns,
		ciphers: crypto.LocalCiphers(),
		fdb:     newFDB(cfg.maxMACs(), cfg.Isolate),
		limiter: newRateLimiter(),
		kick:    make(chan struct{}, 1),
		byKey:   make(map[crypto.PublicKey]*peer),
		pending: make(map[uint32]*peer),
	}
	c.minWire.Store(defaultWireMTU)
	if cfg.Responder {
		c.responder = crypto.NewResponder(cfg.PrivateKey, c.ciphers)
	}
	list := []*peer{}
	for _, pc := range cfg.Peers {
		p := c.configuredPeer(pc)
		c.byKey[p.key] = p
		list = append(list, p)
	}
	c.peers.Store(&list)
	return c, nil
}

// SetPeers replaces the configured peers, for a live reload. A peer whose
// key, name and dialer are unchanged keeps its sessions and loses no frame;
// one that is gone, or changed, goes down (its sessions and MACs are
// forgotten); a new one is added, and a client starts its handshake at
// once. Peers that came in through Allow or AllowAny are left alone unless
// the new configuration names them.
func (c *Cable) SetPeers(peers []PeerConfig) (added, removed int, err error) {
	want := make(map[crypto.PublicKey]PeerConfig, len(peers))
	for _, pc := range peers {
		if pc.PublicKey == (crypto.PublicKey{}) {
			return 0, 0, errors.New("cable: a peer without a public key")
		}
		if _, dup := want[pc.PublicKey]; dup {
			return 0, 0, fmt.Errorf("cable: peer %s listed twice", pc.PublicKey.Short())
		}
		if pc.Name == "" {
			pc.Name = pc.PublicKey.Short()
		}
		want[pc.PublicKey] = pc
	}
	c.pmu.Lock()
	var keep, drop []*peer
	for _, p := range c.peerList() {
		pc, listed := want[p.key]
		switch {
		case p.dynamic && !listed:
			keep = append(keep, p)
		case listed && !p.dynamic && samePeer(pc, p.conf):
			keep = append(keep, p)
			delete(want, p.key)
		default:
			drop = append(drop, p)
			delete(c.byKey, p.key)
		}
	}
	for _, pc := range peers {
		if _, ok := want[pc.PublicKey]; !ok {
			continue // kept
		}
		p := c.configuredPeer(want[pc.PublicKey])
		c.byKey[p.key] = p
		keep = append(keep, p)
		added++
	}
	c.peers.Store(&keep)
	c.pmu.Unlock()
	for _, p := range drop {
		c.retire(p)
	}
	c.kickTimers()
	return added, len(drop), nil
}

// samePeer reports whether two configurations of a peer are the same.
func samePeer(a, b PeerConfig) bool {
	if a.Name != b.Name || a.PublicKey != b.PublicKey || a.Dial != b.Dial || a.Keepalive != b.Keepalive ||
		!slices.Equal(a.Fallback, b.Fallback) || !slices.Equal(a.AllowedVLANs, b.AllowedVLANs) ||
		(a.PSK == nil) != (b.PSK == nil) || a.PSK != nil && *a.PSK != *b.PSK ||
		len(a.AllowedMACs) != len(b.AllowedMACs) {
		return false
	}
	for i := range a.AllowedMACs {
		if a.AllowedMACs[i].String() != b.AllowedMACs[i].String() {
			return false
		}
	}
	return true
}

// configuredPeer makes the peer that pc describes.
func (c *Cable) configuredPeer(pc PeerConfig) *peer {
	if pc.Name == "" {
		pc.Name = pc.PublicKey.Short()
	}
	p := c.newPeer(pc.Name, pc.PublicKey, pc.Dial)
	p.conf = pc
	if pc.Dial != nil {
		p.dialers = append([]*Dialer{pc.Dial}, pc.Fallback...)
	}
	if pc.PSK != nil {
		p.psk = pc.PSK
	}
	if len(pc.AllowedMACs) > 0 {
		p.macsOK = map[[6]byte]bool{}
		for _, m := range pc.AllowedMACs {
			var k [6]byte
			copy(k[:], m)
			p.macsOK[k] = true
		}
	}
	if len(pc.AllowedVLANs) > 0 {
		p.vlansOK = map[uint16]bool{}
		for _, v := range pc.AllowedVLANs {
			p.vlansOK[v] = true
		}
	}
	return p
}

// allows reports whether a frame from p with source src may enter.
func (p *peer) allows(src macKey) bool {
	return (p.macsOK == nil || p.macsOK[src.mac]) && (p.vlansOK == nil || p.vlansOK[src.vlan])
}

// keepalive is p's keepalive interval.
func (c *Cable) keepaliveOf(p *peer) time.Duration {
	if p.conf.Keepalive > 0 {
		return p.conf.Keepalive
	}
	return c.cfg.keepalive()
}

// retire takes a peer that SetPeers removed down for good.
func (c *Cable) retire(p *peer) {
	p.removed.Store(true)
	c.setUp(p, false, "removed from the configuration")
	p.mu.Lock()
	c.imu.Lock()
	for _, in := range []*crypto.Initiator{p.initiator, p.prevInit} {
		if in != nil {
			delete(c.pending, in.LocalIndex())
		}
	}
	c.imu.Unlock()
	for _, s := range []*session{p.prev, p.next, p.nextOld, p.cur.Swap(nil)} {
		if s != nil {
			c.unregister(s.LocalIndex())
		}
	}
	p.prev, p.next, p.nextOld, p.initiator, p.prevInit = nil, nil, nil, nil, nil
	p.mu.Unlock()
	c.fdb.forget(p)
	c.closeOwnPort(p)
}

// Run moves frames until ctx is done or the port fails, then closes the
// port and conns, waits for every loop to end and returns. It returns nil
// after a cancelled ctx.
func (c *Cable) Run(ctx context.Context) error {
	c.pool = newCryptoPool(c.cfg.cryptoWorkers())
	defer c.pool.stop()
	var wg sync.WaitGroup
	errc := make(chan error, 1+len(c.conns))
	if c.port != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- c.portLoop(c.port, nil)
		}()
	}
	for _, conn := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- c.connLoop(conn)
		}()
	}
	tctx, stopTimers := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.timerLoop(tctx)
	}()
	c.kickTimers()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if errors.Is(err, io.EOF) {
		c.log.Info("port closed by the other side (end of stream)")
		err = nil
	}
	stopTimers()
	c.closing.Store(true)
	if c.port != nil {
		c.port.Close()
	}
	for _, conn := range c.conns {
		conn.Close()
	}
	for _, p := range c.peerList() {
		c.closeOwnPort(p)
	}
	wg.Wait()
	c.ownWG.Wait()
	for _, p := range c.peerList() {
		if p.up.CompareAndSwap(true, false) {
			c.log.Info("peer down", "peer", p.name, "reason", "shutdown")
		}
	}
	return err
}

func (c *Cable) peerList() []*peer { return *c.peers.Load() }

func (c *Cable) newPeer(name string, key crypto.PublicKey, dial *Dialer) *peer {
	p := &peer{name: name, key: key, dial: dial, psk: c.cfg.PSK}
	p.wireMTU.Store(defaultWireMTU)
	p.reasm.total = &c.inReasm
	return p
}

func (c *Cable) kickTimers() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Cable) drop(p *peer, r dropReason) {
	if p != nil {
		p.drops[r].Add(1)
	} else {
		c.drops[r].Add(1)
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		now := time.Now().UnixNano()
		last := c.debugGate.Load()
		if now-last > int64(time.Second) && c.debugGate.CompareAndSwap(last, now) {
			name := ""
			if p != nil {
				name = p.name
			}
			c.log.Debug("dropped", "reason", r.String(), "peer", name)
		}
	}
}

// outBatch collects the packets a loop sends, per conn, so each conn gets
// one WriteBatch per loop iteration. Their seals are deferred to flush,
// which may spread them over the cable's crypto workers; the packets still
// go out in the order they were queued.
type outBatch struct {
	conns []transport.Conn
	ps    [][]transport.Packet
	cb    cryptoBatch
}

// seal queues j's frame, to be sealed and sent at flush.
func (o *outBatch) seal(j sealJob) { o.cb.seals = append(o.cb.seals, j) }

func (o *outBatch) add(pt *path, b []byte) {
	for i, conn := range o.conns {
		if conn == pt.conn {
			o.ps[i] = append(o.ps[i], transport.Packet{B: b, Addr: pt.addr})
			return
		}
	}
	o.conns = append(o.conns, pt.conn)
	o.ps = append(o.ps, []transport.Packet{{B: b, Addr: pt.addr}})
}

func (o *outBatch) flush(c *Cable) {
	if len(o.cb.seals) > 0 {
		o.cb.run(c.pool)
		for i := range o.cb.seals {
			j := &o.cb.seals[i]
			if j.err != nil { // the session is used up: a new one is due
				c.drop(j.p, dropNoSession)
				c.kickTimers()
				continue
			}
			o.add(j.pt, j.pkt)
		}
		clear(o.cb.seals)
		o.cb.seals = o.cb.seals[:0]
	}
	for i, conn := range o.conns {
		if len(o.ps[i]) == 0 {
			continue
		}
		if err := conn.WriteBatch(o.ps[i]); err != nil {
			var tb *transport.TooBigError
			if errors.As(err, &tb) {
				c.drop(nil, dropTooBig)
			}
		}
		clear(o.ps[i])
		o.ps[i] = o.ps[i][:0]
	}
}

// scratch is a loop-owned free list of packet buffers for frames that go
// to more than one place.
type scratch struct {
	bufs [][]byte
	used int
}

func (s *scratch) get() []byte {
	if s.used == len(s.bufs) {
		s.bufs = append(s.bufs, make([]byte, bufSize))
	}
	b := s.bufs[s.used]
	s.used++
	return b
}

// bufSize fits the largest frame with its header and tag.
const bufSize = crypto.HeaderLen + bridgeif.MaxFrame + crypto.TagLen

// portLoop reads frames from port and sends them to the peers they are
// for: through the fdb for the cable's port, or all to owner for a peer's
// own port.
func (c *Cable) portLoop(port bridgeif.Port, owner *peer) error {
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, batch)
	var out outBatch
	var sc scratch
	failures := 0
	for {
		n, err := port.ReadBatch(bufs, sizes, crypto.HeaderLen)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			failures++
			if failures > 100 {
				return fmt.Errorf("port: %w", err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		failures = 0
		now := time.Now().UnixNano()
		sc.used = 0
		for i := 0; i < n; i++ {
			size := sizes[i]
			frame := bufs[i][crypto.HeaderLen : crypto.HeaderLen+size]
			if size < ethHeaderLen {
				c.drop(nil, dropRunt)
				continue
			}
			dst, src := frameKeys(frame)
			if c.cfg.DropBPDU && dst.isBPDU() {
				c.drop(nil, dropBPDU)
				continue
			}
			if mtu := c.cfg.clampFrameMTU(int(c.minWire.Load())); mtu > 0 && clampMSS(frame, mtu) {
				c.clamped.Add(1)
			}
			if owner != nil {
				c.seal(owner, bufs[i], size, &out, &sc, now)
				continue
			}
			c.fdb.learn(src, nil, now)
			if p, ok := c.fdb.lookup(dst); ok {
				if p != nil {
					c.seal(p, bufs[i], size, &out, &sc, now)
				}
				continue
			}
			c.flood(nil, bufs[i], size, &out, &sc, now)
		}
		out.flush(c)
	}
}

// flood sends the frame at buf[HeaderLen:HeaderLen+size] to every peer with
// a session except from. The last peer seals buf in place; the others get
// copies.
func (c *Cable) flood(from *peer, buf []byte, size int, out *outBatch, sc *scratch, now int64) {
	var last *peer
	for _, p := range c.peerList() {
		if p == from || p.cur.Load() == nil {
			continue
		}
		if last != nil {
			b := sc.get()
			copy(b[crypto.HeaderLen:], buf[crypto.HeaderLen:crypto.HeaderLen+size])
			c.seal(last, b, size, out, sc, now)
		}
		last = p
	}
	if last != nil {
		c.seal(last, buf, size, out, sc, now)
	}
}

// seal seals the frame at buf[HeaderLen:HeaderLen+size] for p in place and
// queues the packet on p's path.
func (c *Cable) seal(p *peer, buf []byte, size int, out *outBatch, sc *scratch, now int64) {
	s := p.cur.Load()
	pt := p.path.Load()
	if s == nil || pt == nil || now-s.Created().UnixNano() >= int64(crypto.RejectAfterTime) {
		c.drop(p, dropNoSession)
		if p.dial != nil {
			c.kickTimers()
		}
		return
	}
	if wire := int(p.wireMTU.Load()); crypto.Overhead+size > wire {
		if !c.fragment(p, s, pt, buf, size, wire, out, sc) {
			c.drop(p, dropTooBig)
			return
		}
		p.txFrames.Add(1)
		p.txBytes.Add(uint64(size))
		p.noteSent(now)
		return
	}
	out.seal(sealJob{p: p, s: s, pt: pt, typ: crypto.TypeData, flags: p.flags(now), buf: buf, size: size})
	p.txFrames.Add(1)
	p.txBytes.Add(uint64(size))
	p.noteSent(now)
}

// flags returns the header flags of a packet to p sent at now: FlagHeard
// when p was heard from within heardWindow.
func (p *peer) flags(now int64) byte {
	if now-p.lastRecv.Load() < int64(heardWindow) {
		return crypto.FlagHeard
	}
	return 0
}

func (p *peer) noteSent(now int64) {
	p.lastSent.Store(now)
	p.unanswered.CompareAndSwap(0, now)
}

// connLoop reads packets from conn, opens them and delivers their frames.
func (c *Cable) connLoop(conn transport.Conn) error {
	ps := make([]transport.Packet, batch)
	for i := range ps {
		ps[i].B = make([]byte, bufSize)
	}
	var portBufs [][]byte
	var out outBatch
	var sc scratch
	var ob cryptoBatch // the batch's opens
	for {
		for i := range ps {
			ps[i].B = ps[i].B[:cap(ps[i].B)]
		}
		n, err := conn.ReadBatch(ps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			c.log.Warn("read failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		sc.used = 0
		portBufs = c.receiveBatch(conn, ps[:n], &ob, &out, &sc, portBufs[:0], time.Now().UnixNano())
		if len(portBufs) > 0 {
			if _, err := c.port.WriteBatch(portBufs, crypto.HeaderLen); err != nil && errors.Is(err, net.ErrClosed) {
				return nil
			}
		}
		out.flush(c)
	}
}

// finishOpens opens the packets queued in ob (spread over the crypto
// workers) and handles them in the order they came, appending what goes to
// the port to portBufs.
func (c *Cable) finishOpens(conn transport.Conn, ps []transport.Packet, ob *cryptoBatch, portBufs [][]byte, out *outBatch, sc *scratch, now int64) [][]byte {
	if len(ob.opens) == 0 {
		return portBufs
	}
	ob.run(c.pool)
	for k := range ob.opens {
		j := &ob.opens[k]
		if b := c.opened(conn, &ps[j.i], j.s, j.frame, j.err, out, sc, now); b != nil {
			portBufs = append(portBufs, b)
		}
	}
	clear(ob.opens)
	ob.opens = ob.opens[:0]
	return portBufs
}

// receiveBatch handles the packets ps read from conn, in order: it opens
// the sealed ones (spread over the crypto workers), handles handshakes,
// queues relays and replies on out, and appends the buffers to deliver to
// the port (the frame at offset HeaderLen) to portBufs.
func (c *Cable) receiveBatch(conn transport.Conn, ps []transport.Packet, ob *cryptoBatch, out *outBatch, sc *scratch, portBufs [][]byte, now int64) [][]byte {
	for i := range ps {
		pk := &ps[i]
		typ, idx, ok := crypto.ParseHeader(pk.B)
		if ok && sealedType(typ) {
			if s := c.sessionOf(idx, now); s != nil {
				ob.opens = append(ob.opens, openJob{i: i, s: s, pkt: pk.B})
			}
			continue
		}
		// A handshake message changes sessions: the packets before it
		// are done first, as they came.
		portBufs = c.finishOpens(conn, ps, ob, portBufs, out, sc, now)
		c.handshake(conn, pk, typ, idx, ok, now)
	}
	return c.finishOpens(conn, ps, ob, portBufs, out, sc, now)
}

// sealedType reports whether packets of type typ are sealed with a
// session's keys (data, fragments, probes).
func sealedType(typ byte) bool {
	return typ == crypto.TypeData || typ == crypto.TypeFragment || typ == crypto.TypeProbe
}

// handshake handles a packet that is not sealedType: a handshake message,
// or something to drop.
func (c *Cable) handshake(conn transport.Conn, pk *transport.Packet, typ byte, idx uint32, ok bool, now int64) {
	switch {
	case !ok:
		c.drop(nil, dropRunt)
	case typ == crypto.TypeInit:
		c.handleInit(conn, pk.Addr, pk.B, now)
	case typ == crypto.TypeResponse:
		c.handleResponse(conn, pk.Addr, pk.B, idx, now)
	default:
		c.drop(nil, dropRunt)
	}
}

// sessionOf returns the usable session with local index idx, or nil (and
// counts the drop).
func (c *Cable) sessionOf(idx uint32, now int64) *session {
	v, _ := c.index.Load(idx)
	s, _ := v.(*session)
	if s == nil {
		c.drop(nil, dropNoSession)
		return nil
	}
	if now-s.Created().UnixNano() >= int64(crypto.RejectAfterTime) {
		c.drop(s.peer, dropNoSession)
		return nil
	}
	return s
}

// opened handles packet pk after s.Open(pk.B) returned frame and err: it
// returns the buffer to deliver to the port (the frame at offset
// HeaderLen), or nil.
func (c *Cable) opened(conn transport.Conn, pk *transport.Packet, s *session, frame []byte, err error, out *outBatch, sc *scratch, now int64) []byte {
	p := s.peer
	if err != nil {
		if errors.Is(err, crypto.ErrReplay) {
			c.drop(p, dropReplay)
		} else {
			c.drop(p, dropAuth)
		}
		return nil
	}
	typ := pk.B[0]
	c.authenticated(p, s, conn, pk.Addr, now, crypto.Flags(pk.B))
	if typ == crypto.TypeProbe {
		c.handleProbe(p, s, conn, pk.Addr, frame)
		return nil
	}
	buf := pk.B
	if typ == crypto.TypeFragment {
		whole := c.reassemble(p, frame, now)
		if whole == nil {
			return nil
		}
		buf = sc.get()
		frame = buf[crypto.HeaderLen : crypto.HeaderLen+copy(buf[crypto.HeaderLen:], whole)]
	}
	if len(frame) == 0 { // keepalive
		if p.dial == nil {
			p.recvData.Store(true)
		}
		return nil
	}
	p.recvData.Store(true)
	if len(frame) < ethHeaderLen {
		c.drop(p, dropRunt)
		return nil
	}
	p.rxFrames.Add(1)
	p.rxBytes.Add(uint64(len(frame)))
	dst, src := frameKeys(frame)
	if !p.allows(src) {
		c.drop(p, dropNotAllowed)
		return nil
	}
	if op := p.own.Load(); op != nil { // the peer has a port of its own
		op.port.WriteBatch([][]byte{buf[:crypto.HeaderLen+len(frame)]}, crypto.HeaderLen)
		return nil
	}
	if c.port == nil {
		c.drop(p, dropNoSession)
		return nil
	}
	if c.cfg.DropBPDU && dst.isBPDU() {
		c.drop(p, dropBPDU)
		return nil
	}
	switch c.fdb.learn(src, p, now) {
	case overCap:
		c.drop(p, dropMACLimit) // counted; the frame still goes
	case conflict:
		c.drop(p, dropMACConflict)
		return nil
	}
	size := len(frame)
	buf = buf[:crypto.HeaderLen+size]
	if to, known := c.fdb.lookup(dst); known {
		switch {
		case to == nil:
			return buf
		case to == p:
			return nil
		case c.cfg.Isolate:
			c.drop(p, dropIsolated)
			return nil
		default:
			b := sc.get()
			copy(b[crypto.HeaderLen:], frame)
			c.seal(to, b, size, out, sc, now)
			return nil
		}
	}
	if rate := c.cfg.floodRate(); rate > 0 {
		p.floodMu.Lock()
		ok := p.flood.take(now, float64(rate), float64(2*rate))
		p.floodMu.Unlock()
		if !ok {
			c.drop(p, dropRateLimited)
			return nil
		}
	}
	if !c.cfg.Isolate {
		b := sc.get()
		copy(b[crypto.HeaderLen:], frame)
		c.flood(p, b, size, out, sc, now)
	}
	return buf
}

// authenticated records that a packet from p opened with s on (conn, addr):
// it confirms a responder's new session, moves the path, and marks the peer
// up.
func (c *Cable) authenticated(p *peer, s *session, conn transport.Conn, addr transport.Addr, now int64, flags byte) {
	p.lastRecv.Store(now)
	if flags&crypto.FlagHeard != 0 {
		// Only a peer that hears us answers our questions: traffic that
		// flows one way only (UDP blocked towards the peer) leaves ours
		// unanswered, and the path goes stale.
		p.unanswered.Store(0)
	}
	if pt := p.path.Load(); pt != nil && pt.conn != conn && len(p.dialers) > 1 {
		// A client with fallbacks moves between transports by handshakes
		// alone: a packet that still comes over the old transport says
		// nothing of whether ours get through there.
	} else if pt == nil || pt.conn != conn || pt.addr != addr {
		p.path.Store(&path{conn: conn, addr: addr})
		c.noteTransport(p, conn)
		c.updateMTU(p)
		if pt != nil {
			c.log.Info("path changed", "peer", p.name, "addr", addr.String())
		}
	}
	if p.cur.Load() == s {
		// A peer we dial that went down for want of answers is up again
		// only when it says it hears us: its packets alone may flow one
		// way.
		if !p.up.Load() && (p.dial == nil || flags&crypto.FlagHeard != 0) {
			c.setUp(p, true, "")
		}
		return
	}
	p.mu.Lock()
	confirmed := false
	if p.next == s || p.nextOld == s {
		c.rotateLocked(p, s)
		for _, o := range []*session{p.next, p.nextOld} {
			if o != nil && o != s {
				c.unregister(o.LocalIndex())
			}
		}
		p.next, p.nextOld = nil, nil
		confirmed = true
	}
	p.mu.Unlock()
	if confirmed {
		p.handshakes.Add(1)
		p.lastHandshake.Store(now)
		c.log.Info("handshake complete", "peer", p.name, "cipher", s.Cipher().String(), "addr", addr.String())
		c.setUp(p, true, "")
	}
}

// rotateLocked makes s p's current session; the current one becomes the
// previous one, still accepted until it expires, and the previous one is
// forgotten. p.mu must be held.
func (c *Cable) rotateLocked(p *peer, s *session) {
	if p.prev != nil {
		c.unregister(p.prev.LocalIndex())
	}
	p.prev = p.cur.Load()
	p.cur.Store(s)
}

// setUp marks p up or down and logs the change. Going down forgets the
// MACs learned behind p.
func (c *Cable) setUp(p *peer, up bool, reason string) {
	if !p.up.CompareAndSwap(!up, up) {
		return
	}
	if up {
		p.upSince.Store(time.Now().UnixNano())
		pt := p.path.Load()
		addr := ""
		if pt != nil {
			addr = pt.addr.String()
		}
		c.log.Info("peer up", "peer", p.name, "key", p.key.Short(), "addr", addr)
		if c.cfg.PortPerPeer != nil && !c.closing.Load() {
			c.openOwnPort(p)
		}
		return
	}
	c.fdb.forget(p)
	c.closeOwnPort(p)
	c.log.Info("peer down", "peer", p.name, "reason", reason)
}

// ownPort is a port opened for one peer alone (Config.PortPerPeer).
type ownPort struct {
	port bridgeif.Port
}

// openOwnPort opens p's own port and starts its loop. It runs on its own
// goroutine, as opening may block (a switch that is slow to answer).
func (c *Cable) openOwnPort(p *peer) {
	if !p.opening.CompareAndSwap(false, true) {
		return
	}
	c.ownWG.Add(1)
	go func() {
		defer c.ownWG.Done()
		defer p.opening.Store(false)
		if p.own.Load() != nil {
			return
		}
		port, err := c.cfg.PortPerPeer(p.name)
		if err != nil {
			c.log.Warn("cannot open the peer's own port", "peer", p.name, "err", err)
			return
		}
		op := &ownPort{port: port}
		p.own.Store(op)
		if !p.up.Load() || c.closing.Load() { // went down meanwhile
			c.closeOwnPort(p)
		}
		c.log.Info("peer port open", "peer", p.name)
		if err := c.portLoop(port, p); err != nil {
			c.log.Warn("peer port failed", "peer", p.name, "err", err)
		}
	}()
}

// closeOwnPort closes p's own port, if it has one.
func (c *Cable) closeOwnPort(p *peer) {
	if op := p.own.Swap(nil); op != nil {
		op.port.Close()
	}
}

// handleInit answers a handshake initiation from an allowed peer.
func (c *Cable) handleInit(conn transport.Conn, addr transport.Addr, msg []byte, now int64) {
	if c.responder == nil {
		c.drop(nil, dropNotAllowed)
		return
	}
	if !c.responder.CheckMAC(msg) {
		c.drop(nil, dropAuth)
		return
	}
	if !c.limiter.allow(addr, now) {
		c.drop(nil, dropRateLimited)
		return
	}
	pi, err := c.responder.ReadInit(msg)
	if err != nil {
		c.drop(nil, dropAuth)
		return
	}
	p := c.peerFor(pi.Peer())
	if p == nil {
		c.drop(nil, dropNotAllowed)
		return
	}
	p.mu.Lock()
	if pi.Timestamp() <= p.lastInitTS {
		p.mu.Unlock()
		c.drop(p, dropHandshakeReplay)
		return
	}
	idx := c.newIndex()
	msg2, cs, err := pi.Respond(p.psk, idx)
	if err != nil {
		p.mu.Unlock()
		c.drop(p, dropAuth)
		return
	}
	p.lastInitTS = pi.Timestamp()
	s := &session{Session: cs, peer: p}
	if p.nextOld != nil {
		c.unregister(p.nextOld.LocalIndex())
	}
	p.nextOld, p.next = p.next, s
	c.register(idx, s)
	p.mu.Unlock()
	c.log.Debug("handshake response sent", "peer", p.name, "addr", addr.String())
	conn.WriteBatch([]transport.Packet{{B: msg2, Addr: addr}})
}

// peerFor returns the peer with key, creating it when the configuration
// allows that key, or nil.
func (c *Cable) peerFor(key crypto.PublicKey) *peer {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	p := c.byKey[key]
	if p != nil && !p.dynamic {
		return p
	}
	name, ok := "", false
	switch {
	case c.cfg.Allow != nil:
		name, ok = c.cfg.Allow(key)
	case c.cfg.AllowAny:
		name, ok = key.Short(), true
	}
	if !ok {
		return nil // a dynamic peer no longer allowed gets no new session
	}
	if p != nil {
		return p
	}
	if len(c.byKey) >= c.cfg.maxPeers() {
		return nil
	}
	if name == "" {
		name = key.Short()
	}
	p = c.newPeer(name, key, nil)
	p.dynamic = true
	c.byKey[key] = p
	list := append(append([]*peer(nil), c.peerList()...), p)
	c.peers.Store(&list)
	return p
}

// handleResponse completes a handshake this cable initiated.
func (c *Cable) handleResponse(conn transport.Conn, addr transport.Addr, msg []byte, idx uint32, now int64) {
	c.imu.Lock()
	p := c.pending[idx]
	c.imu.Unlock()
	if p == nil {
		c.drop(nil, dropNoSession)
		return
	}
	p.mu.Lock()
	h := p.initiator
	if h == nil || h.LocalIndex() != idx {
		h = p.prevInit
	}
	if h == nil || h.LocalIndex() != idx {
		p.mu.Unlock()
		c.drop(p, dropNoSession)
		return
	}
	cs, err := h.Consume(msg)
	if err != nil {
		p.mu.Unlock()
		c.drop(p, dropAuth)
		return
	}
	s := &session{Session: cs, peer: p}
	c.imu.Lock()
	for _, in := range []*crypto.Initiator{p.initiator, p.prevInit} {
		if in != nil {
			delete(c.pending, in.LocalIndex())
		}
	}
	c.index.Store(idx, s)
	c.imu.Unlock()
	p.initiator, p.prevInit = nil, nil
	p.attempts = 0
	p.wentStale = false
	c.rotateLocked(p, s)
	p.mu.Unlock()

	p.lastRecv.Store(now)
	p.unanswered.Store(0)
	p.path.Store(&path{conn: conn, addr: addr})
	c.noteTransport(p, conn)
	c.updateMTU(p)
	p.handshakes.Add(1)
	p.lastHandshake.Store(now)
	c.log.Info("handshake complete", "peer", p.name, "cipher", cs.Cipher().String(), "addr", addr.String())
	c.setUp(p, true, "")
	c.sendKeepalive(p, now) // confirms the session to the responder
}

// noteTransport makes the dialer over conn p's active one, when p has
// dialers: the transport the peer answers over is the one in use.
func (c *Cable) noteTransport(p *peer, conn transport.Conn) {
	for i, d := range p.dialers {
		if d.Conn == conn {
			if old := int(p.active.Swap(int32(i))); old != i {
				c.log.Info("transport changed", "peer", p.name, "from", transportName(p.dialers[old].Conn), "to", transportName(conn))
			}
			return
		}
	}
}

// sendKeepalive sends an empty data packet to p.
func (c *Cable) sendKeepalive(p *peer, now int64) {
	s, pt := p.cur.Load(), p.path.Load()
	if s == nil || pt == nil {
		return
	}
	var buf [crypto.Overhead]byte
	pkt, err := s.SealFlags(crypto.TypeData, p.flags(now), buf[:], 0)
	if err != nil {
		return
	}
	p.noteSent(now)
	pt.conn.WriteBatch([]transport.Packet{{B: pkt, Addr: pt.addr}})
}

// initiate sends a handshake initiation to p over its dialer via, as the
// timers decided when p's current session was seen. It runs on its own
// goroutine because resolving the peer's address may block.
func (c *Cable) initiate(p *peer, via int, seen *session) {
	defer func() {
		p.mu.Lock()
		p.dialing = false
		p.mu.Unlock()
	}()
	d := p.dialers[via]
	addr, err := d.Resolve()
	if err != nil {
		c.log.Warn("handshake: cannot resolve peer", "peer", p.name, "err", err)
		return
	}
	idx := c.newIndex()
	now := time.Now()
	h, msg1, err := crypto.NewInitiator(c.cfg.PrivateKey, p.key, p.psk, idx, c.ciphers, now)
	if err != nil {
		c.log.Warn("handshake: cannot initiate", "peer", p.name, "err", err)
		return
	}
	p.mu.Lock()
	if p.removed.Load() {
		p.mu.Unlock()
		return
	}
	if p.cur.Load() != seen {
		// A handshake completed (the answer to an earlier initiation) since
		// the timers decided on this one: a new initiation now would make
		// the responder drop the session just confirmed.
		p.mu.Unlock()
		return
	}
	if p.prevInit != nil {
		c.imu.Lock()
		delete(c.pending, p.prevInit.LocalIndex())
		c.imu.Unlock()
	}
	p.prevInit, p.initiator = p.initiator, h
	c.imu.Lock()
	c.pending[idx] = p
	c.imu.Unlock()
	p.mu.Unlock()
	c.log.Debug("handshake initiation sent", "peer", p.name, "addr", addr.String(), "transport", transportName(d.Conn))
	d.Conn.WriteBatch([]transport.Packet{{B: msg1, Addr: addr}})
}

// newIndex returns a random receiver index not in use.
func (c *Cable) newIndex() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		idx := binary.LittleEndian.Uint32(b[:])
		c.imu.Lock()
		_, used := c.index.Load(idx)
		_, pend := c.pending[idx]
		c.imu.Unlock()
		if !used && !pend && idx != 0 {
			return idx
		}
	}
}

func (c *Cable) register(idx uint32, s *session) {
	c.imu.Lock()
	c.index.Store(idx, s)
	c.imu.Unlock()
}

func (c *Cable) unregister(idx uint32) {
	c.imu.Lock()
	c.index.Delete(idx)
	c.imu.Unlock()
}

// timerLoop runs keepalives, handshake retries, rekeys, expiry and aging.
func (c *Cable) timerLoop(ctx context.Context) {
	t := time.NewTicker(tick)
	defer t.Stop()
	lastAge, lastMTU := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		now := time.Now()
		c.lastTick.Store(now.UnixNano())
		for _, p := range c.peerList() {
			c.peerTimers(ctx, p, now)
		}
		if now.Sub(lastAge) >= time.Second {
			lastAge = now
			// The kernel's path MTU (ICMP too-big) is read again every
			// pathMTURecheck; a path change reads it at once. A carrier
			// that finds its own path MTU (QUIC: it grows after the
			// handshake and starts again small when the client's address
			// changes) is read every second.
			recheck := now.Sub(lastMTU) >= pathMTURecheck
			if recheck {
				lastMTU = now
			}
			minWire := int64(0)
			for _, p := range c.peerList() {
				if pt := p.path.Load(); recheck || pt != nil && selfProbing(pt.conn) {
					c.updateMTU(p)
				}
				p.reasm.expire(now.UnixNano(), c, p)
				if w := p.wireMTU.Load(); p.up.Load() && (minWire == 0 || w < minWire) {
					minWire = w
				}
			}
			if minWire == 0 {
				minWire = defaultWireMTU
			}
			c.minWire.Store(minWire)
			c.fdb.age(now.Add(-c.cfg.fdbMaxAge()).UnixNano())
			c.limiter.prune(now.UnixNano())
		}
	}
}

// peerTimers does what is due for p at now.
func (c *Cable) peerTimers(ctx context.Context, p *peer, now time.Time) {
	if p.removed.Load() {
		return
	}
	nowNs := now.UnixNano()
	cur := p.cur.Load()
	valid := cur != nil && now.Sub(cur.Created()) < crypto.RejectAfterTime
	unanswered := p.unanswered.Load()
	stale := unanswered != 0 && nowNs-unanswered > int64(staleAfter)

	// Expire sessions that can no longer be used.
	c.expire(p, now)

	if p.dial != nil {
		if stale && p.up.Load() {
			c.setUp(p, false, "no answer")
			// Seconds of unanswered packets say more than one unanswered
			// handshake: one more over this transport, then the next.
			p.mu.Lock()
			p.wentStale = true
			p.mu.Unlock()
		}
		need := !valid || stale || now.Sub(cur.Created()) >= crypto.RekeyAfterTime ||
			cur.Sent() >= crypto.RekeyAfterMessages
		p.mu.Lock()
		start := need && !p.dialing && !now.Before(p.nextAttempt) && ctx.Err() == nil
		via := int(p.active.Load())
		if start {
			limit := fallbackAfter
			if p.wentStale {
				limit = 1
			}
			if p.attempts >= limit && len(p.dialers) > 1 {
				// Handshakes over this transport do not complete: try the next.
				via = (via + 1) % len(p.dialers)
				p.active.Store(int32(via))
				p.attempts = 0
				p.wentStale = false
				c.log.Warn("no handshake completes, trying the next transport", "peer", p.name,
					"transport", transportName(p.dialers[via].Conn))
			}
			p.dialing = true
			p.nextAttempt = now.Add(backoff(p.attempts))
			p.attempts++
		} else if via > 0 && valid && !stale && !p.dialing && now.Sub(p.lastPrefer) >= preferRecheck && ctx.Err() == nil {
			// On a fallback: see whether the preferred transport works again.
			start, via = true, 0
			p.dialing = true
			p.lastPrefer = now
		}
		p.mu.Unlock()
		if start {
			go c.initiate(p, via, cur)
		}
		if valid && !stale && nowNs-p.lastSent.Load() >= int64(c.keepaliveOf(p)) {
			c.sendKeepalive(p, nowNs)
		}
	} else if p.up.Load() && nowNs-p.lastRecv.Load() > int64(3*c.keepaliveOf(p)+crypto.RekeyTimeout) {
		c.setUp(p, false, "silent")
	}

	if valid {
		c.probeTimers(p, now)
	}

	// Passive keepalive: answer a peer that sent something, so that it
	// knows the cable is alive, when nothing else has been sent since.
	if valid && p.recvData.Load() && p.lastRecv.Load() > p.lastSent.Load() &&
		nowNs-p.lastSent.Load() >= int64(passiveKeepalive) {
		p.recvData.Store(false)
		c.sendKeepalive(p, nowNs)
		p.unanswered.Store(0) // an answer is not a question
	}
}

// expire forgets p's sessions that are past RejectAfterTime.
func (c *Cable) expire(p *peer, now time.Time) {
	old := func(s *session) bool { return s != nil && now.Sub(s.Created()) >= crypto.RejectAfterTime }
	p.mu.Lock()
	defer p.mu.Unlock()
	if old(p.prev) {
		c.unregister(p.prev.LocalIndex())
		p.prev = nil
	}
	if old(p.nextOld) {
		c.unregister(p.nextOld.LocalIndex())
		p.nextOld = nil
	}
	if old(p.next) {
		c.unregister(p.next.LocalIndex())
		p.next = nil
	}
	if cur := p.cur.Load(); old(cur) {
		c.unregister(cur.LocalIndex())
		p.cur.Store(nil)
	}
}

// backoff returns the wait before handshake attempt n+1: 1s doubling to
// maxBackoff, with ±20 % jitter so that many clients do not retry in step.
func backoff(n int) time.Duration {
	d := time.Second << min(n, 4)
	d = min(d, maxBackoff)
	jitter := time.Duration(mrand.Int64N(int64(d) * 2 / 5))
	return d - d/5 + jitter
}

// rateLimiter limits handshake initiations per addr (token bucket) and in
// total, so that a flood of valid-looking initiations cannot use all the
// CPU on Diffie-Hellman.
type rateLimiter struct {
	mu      sync.Mutex // guards all following fields
	buckets map[transport.Addr]*bucket
	global  bucket
}

type bucket struct {
	tokens float64
	last   int64
}

const (
	handshakesPerSecond = 5
	handshakeBurst      = 10
	globalPerSecond     = 1000
	globalBurst         = 2000
	maxBuckets          = 65536
)

func newRateLimiter() *rateLimiter {
	return &rateLimiter{buckets: make(map[transport.Addr]*bucket)}
}

func (b *bucket) take(now int64, rate, burst float64) bool {
	if b.last == 0 {
		b.tokens = burst // a new bucket starts full
	} else {
		b.tokens = min(burst, b.tokens+float64(now-b.last)/float64(time.Second)*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *rateLimiter) allow(addr transport.Addr, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.global.take(now, globalPerSecond, globalBurst) {
		return false
	}
	b := r.buckets[addr]
	if b == nil {
		if len(r.buckets) >= maxBuckets {
			return false
		}
		b = &bucket{}
		r.buckets[addr] = b
	}
	return b.take(now, handshakesPerSecond, handshakeBurst)
}

// prune forgets buckets that have refilled.
func (r *rateLimiter) prune(now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, b := range r.buckets {
		if now-b.last > int64(time.Duration(handshakeBurst/handshakesPerSecond+1)*time.Second) {
			delete(r.buckets, a)
		}
	}
}

// kernelWire returns the wire MTU of pt as the OS knows it: the conn's
// MaxPacket, lowered to the path MTU (interface MTU, ICMP too-big), or to
// what fits a 1500-byte underlay when the OS does not say.
func (c *Cable) kernelWire(pt *path) int {
	wire := defaultWireMTU
	if pm, ok := pt.conn.(pathMTUer); ok {
		if m := pm.PathMTU(pt.addr); m > 0 {
			wire = m
		}
	}
	return max(min(wire, pt.conn.MaxPacket()), minWireMTU)
}

// pathMTUer is a conn that knows the largest packet it can send to an addr
// without fragmentation (0: unknown), from what the OS learned.
type pathMTUer interface {
	PathMTU(transport.Addr) int
}

// selfProber is a conn whose PathMTU the carrier has confirmed itself
// (QUIC's path MTU discovery raises its datagram limit only for sizes the
// peer acknowledged), so cab's own probes would add nothing.
type selfProber interface {
	ProbesPathMTU() bool
}

func selfProbing(conn transport.Conn) bool {
	sp, ok := conn.(selfProber)
	return ok && sp.ProbesPathMTU()
}

// updateMTU sets p's wire MTU from its path: the conn's MaxPacket, lowered
// to the path MTU that the OS knows (interface MTU, ICMP too-big), or to
// what fits a 1500-byte underlay when the OS does not say.
func (c *Cable) updateMTU(p *peer) {
	pt := p.path.Load()
	if pt == nil {
		return
	}
	wire := c.kernelWire(pt)
	p.mu.Lock()
	if l := p.probe.limit; l > 0 && l < wire && !selfProbing(pt.conn) {
		wire = l // a black hole below what the kernel believes
	}
	p.mu.Unlock()
	if old := p.wireMTU.Swap(int64(wire)); old != int64(wire) && p.up.Load() {
		c.log.Info("path mtu", "peer", p.name, "wire_mtu", wire)
	}
}

// FrameMTU returns the largest frame that crosses to every peer without
// being cut into fragments: the frame MTU of the smallest path.
func (c *Cable) FrameMTU() int { return FrameMTU(int(c.minWire.Load())) }
