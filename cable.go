package cab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/internal/ratelimit"
	"cab/transport"
)

// A Cable joins one Port to its peers over one or more Conns and switches
// frames between them. A client is a cable with one peer that it dials; a
// server is a responder cable that peers dial in to.
type Cable struct {
	dropper // drop counts what it drops

	cfg       Config
	log       *slog.Logger
	port      bridgeif.Port
	conns     []transport.Conn
	responder *crypto.Responder
	ciphers   []crypto.Cipher
	limiter   *ratelimit.Limiter[source]
	kick      chan struct{} // wakes the timer loop early

	floodBudget *ratelimit.Pool // copies of flooded frames; nil: no limit

	def   *segment                            // the default segment: the cable's port
	segs  atomic.Pointer[map[uint32]*segment] // the named segments, by id (segment.go)
	smu   sync.Mutex                          // serialises changes of segs
	segWG sync.WaitGroup                      // loops of the named segments' ports

	peers atomic.Pointer[[]*peer] // read-mostly snapshot of every peer

	pmu   sync.Mutex // guards byKey, half and writes of peers
	byKey map[crypto.PublicKey]*peer
	half  halfOpen // dynamic peers not yet proven (halfopen.go)

	index   sync.Map // local index → *session; read without a lock per packet
	revoked sync.Map // local index of a removed peer's session → when it would expire (unix ns)

	imu     sync.Mutex       // serialises writes of index, and guards pending
	pending map[uint32]*peer // local index of an initiation in flight

	running atomic.Bool    // Run has started the loops
	closing atomic.Bool    // Run is shutting down
	ownWG   sync.WaitGroup // loops of the peers' own ports
	diagWG  sync.WaitGroup // warnings that check a carrier (diagnose.go)

	refusals refusalLog // handshakes refused, for the log

	clamped atomic.Uint64 // TCP SYNs whose MSS was lowered
	inReasm atomic.Int64  // frames in reassembly, all peers
	minWire atomic.Int64  // smallest wire MTU of the peers, for the clamp

	pool *cryptoPool // crypto workers, while Run runs

	carrier carrierState // the port's carrier, following the peers

	lastFlush atomic.Int64  // the last flush of the fdb for a topology change
	flushes   atomic.Uint64 // flushes for topology changes

	lastTick  atomic.Int64 // when the timer loop last ran, unix nanoseconds
	loadUntil atomic.Int64 // until when the responder asks for cookies (cookie.go)
	forceLoad bool         // tests: the responder is always under load
}

// Healthy reports whether the cable's loops are running: Run has not
// returned and the timer loop ran within the last 5 seconds. A watchdog
// pets only a healthy cable.
func (c *Cable) Healthy() bool {
	return !c.closing.Load() && time.Now().UnixNano()-c.lastTick.Load() < int64(5*time.Second)
}

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
	// tick is the timer loop's period; with Config.DeadAfter it is a
	// sixth of that when shorter, so an ask goes out within half of the
	// third of DeadAfter it is due at.
	tick = 250 * time.Millisecond
	// answerGap is the least time between two answers to one peer's asks
	// (FlagAsk): asks come at most every MinDeadAfter/6, so a peer
	// that asks more often gets no more answers.
	answerGap = MinDeadAfter / 12
	// pathMTURecheck is how often the kernel's path MTU is read again.
	pathMTURecheck = 5 * time.Second
	// batch is how many frames or packets one read takes at most.
	batch = 64
	// floodBurstPerSecond: the flood budget lets a tenth of a second's
	// copies out at once, so that the other packets wait at most that
	// long behind a burst of flooding.
	floodBurstPerSecond = 10
	// shedAfter is how long packets may wait in a carrier's receive queue
	// before the cable counts itself behind and drops some of the packets
	// of the senders above their fair share unopened, and maxQueueDelay
	// how long before it drops all of them (as long as the stream carriers
	// let a packet wait); fairWindow is how many packets the fair shares
	// are counted over, and minShare the packets of every sender in a
	// window that are always opened (receive.go, fairness).
	shedAfter     = 10 * time.Millisecond
	maxQueueDelay = 100 * time.Millisecond
	fairWindow    = 1024
	minShare      = batch
)

// New makes a Cable of port and conns. Run takes ownership of both and
// closes them when it returns.
func New(cfg Config, port bridgeif.Port, conns []transport.Conn) (*Cable, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if port == nil && cfg.PortPerPeer == nil && len(cfg.Segments) == 0 {
		return nil, errors.New("cable: no port (and no port per peer, no segment)")
	}
	c := &Cable{
		cfg:     cfg,
		log:     cfg.logger(),
		port:    port,
		conns:   conns,
		ciphers: crypto.LocalCiphers(),
		limiter: ratelimit.New[source](handshakeLimits),
		kick:    make(chan struct{}, 1),
		byKey:   make(map[crypto.PublicKey]*peer),
		half:    halfOpen{byKey: map[crypto.PublicKey]*peer{}, bySrc: map[source]int{}},
		pending: make(map[uint32]*peer),
	}
	c.dropper.log = c.log
	if b := cfg.floodBudget(); b > 0 {
		c.floodBudget = ratelimit.NewPool(float64(b), float64(b)/floodBurstPerSecond)
	}
	c.def = c.newSegment(SegmentConfig{Port: port})
	c.def.id, c.def.name = 0, ""
	named := map[uint32]*segment{}
	for _, sc := range cfg.Segments {
		if err := CheckSegmentName(sc.Name); err != nil {
			return nil, fmt.Errorf("cable: %w", err)
		}
		if sc.Port == nil {
			return nil, fmt.Errorf("cable: segment %q has no port", sc.Name)
		}
		s := c.newSegment(sc)
		if _, dup := named[s.id]; dup {
			return nil, fmt.Errorf("cable: segment %q listed twice", sc.Name)
		}
		named[s.id] = s
	}
	c.segs.Store(&named)
	c.minWire.Store(int64(defaultWireMTU))
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

// Run moves frames until ctx is done or the port fails, then closes the
// port and conns, waits for every loop to end and returns. It returns nil
// after a cancelled ctx.
func (c *Cable) Run(ctx context.Context) error {
	c.pool = newCryptoPool(c.cfg.cryptoWorkers())
	defer c.pool.stop()
	c.startCarrier()
	var wg sync.WaitGroup
	errc := make(chan error, 1+len(c.conns))
	if c.port != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- c.portLoop(c.def, c.port, nil)
		}()
	}
	for _, conn := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- c.connLoop(conn)
		}()
	}
	c.smu.Lock()
	for _, s := range c.segments() {
		c.startSegment(s)
	}
	c.running.Store(true)
	c.smu.Unlock()
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
	c.smu.Lock()
	for _, s := range c.segments() {
		s.port.Close()
	}
	c.smu.Unlock()
	c.segWG.Wait()
	for _, p := range c.peerList() {
		c.closeOwnPort(p)
	}
	wg.Wait()
	c.ownWG.Wait()
	c.diagWG.Wait()
	for _, p := range c.peerList() {
		if p.live.up.CompareAndSwap(true, false) {
			c.log.Info("peer down", "peer", p.name(), "reason", "shutdown")
		}
	}
	return err
}

func (c *Cable) peerList() []*peer { return *c.peers.Load() }

// kickTimers wakes the timer loop early.
func (c *Cable) kickTimers() { transport.Wake(c.kick) }

// handshakeLimits bound handshake initiations per source (host) and in
// total, so that a flood of valid-looking initiations cannot use all the
// CPU on Diffie-Hellman.
var handshakeLimits = ratelimit.Limits{
	PerKey: 5, PerKeyBurst: 10,
	Global: 1000, GlobalBurst: 2000,
	MaxKeys: 65536,
}
