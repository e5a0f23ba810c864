package cab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"sync"
	"sync/atomic"

	"cab/bridgeif"
	"cab/crypto"
)

// Segments. One cable may carry several Ethernet segments, each with its
// own port, MAC table and policy: a frame never crosses from one to
// another. The cable's own port (New's port) is the default segment, whose
// packets are today's; a frame of a named segment ends, inside the sealed
// part of its packet, with the segment's id (crypto.SegmentID of its name,
// 4 bytes), and its header carries crypto.FlagSegment. A peer sends and
// receives a named segment's frames only once it has joined it (join.go):
// the server decides, per peer, which segments it may join, and drops and
// counts ("not in segment") what a peer sends into a segment it has not
// joined, whatever id it writes.

// segTrailer is the length of the segment id at the end of a named
// segment's plaintext.
const segTrailer = 4

// SegmentConfig is one named segment of a cable.
type SegmentConfig struct {
	// Name names the segment on both ends; its id on the wire is derived
	// from it (crypto.SegmentID). Letters, digits, '-', '_' and '.', at
	// most 32.
	Name string
	// Spec is the port's spec, as given (-s NAME=SPEC): a reload that
	// keeps it keeps the port.
	Spec string
	// Port is the segment's local port, opened from Spec. Required.
	Port bridgeif.Port
	// PSK, when set, is the segment's own pre-shared key: a peer joins
	// the segment only with a proof that it holds it (a client: proves it
	// with it).
	PSK *crypto.Secret
	// Isolate, MaxMACs, FloodRate and AllowedVLANs are the segment's
	// policy, as Config's are the default segment's (0: Config's value;
	// AllowedVLANs nil: any).
	Isolate      bool
	MaxMACs      int
	FloodRate    int
	AllowedVLANs []uint16
}

var segmentName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

// CheckSegmentName refuses a segment name that is not a short plain word,
// is "default" (status's name for the cable's own port), or whose id would
// be the default segment's.
func CheckSegmentName(name string) error {
	if name == "default" {
		return fmt.Errorf("segment name %q: that is the name status gives the local port (-s SPEC); choose another", name)
	}
	if !segmentName.MatchString(name) {
		return fmt.Errorf("segment name %q: use letters, digits, '-', '_' and '.', at most 32, such as blue", name)
	}
	if crypto.SegmentID(name) == 0 {
		return fmt.Errorf("segment name %q: its id is the default segment's; choose another name", name)
	}
	return nil
}

// segment is one segment of the cable: the default one (id 0, the cable's
// port) or a named one.
type segment struct {
	id      uint32
	name    string // "" for the default segment
	port    bridgeif.Port
	fdb     *fdb
	local   policy // the flood limits of the segment's port
	conf    SegmentConfig
	vlansOK map[uint16]bool // nil: any

	closed atomic.Bool // removed by a reload
	done   chan struct{}

	fromPeers, fromPort atomic.Uint64              // frames that entered the segment from peers, and from its port
	polled              atomic.Uint64              // frames from its port that a conn loop took (Cable.poll)
	reader              atomic.Pointer[portReader] // the port loop's, while it runs on a Poller port
}

// membership is a peer's place in a named segment.
type membership struct {
	seg *segment
	pol policy // the peer's flood limits in the segment
}

// members is a peer's named segments, by id; replaced whole on a change.
type members map[uint32]*membership

// newSegment makes the segment of sc, with the cable's defaults.
func (c *Cable) newSegment(sc SegmentConfig) *segment {
	max := sc.MaxMACs
	if max <= 0 {
		max = c.cfg.maxMACs()
	}
	s := &segment{id: crypto.SegmentID(sc.Name), name: sc.Name, port: sc.Port, conf: sc,
		fdb: newFDB(max, sc.Isolate || c.cfg.Isolate), done: make(chan struct{})}
	if len(sc.AllowedVLANs) > 0 {
		s.vlansOK = map[uint16]bool{}
		for _, v := range sc.AllowedVLANs {
			s.vlansOK[v] = true
		}
	}
	s.fdb.onReclaim = func(from *peer) { c.drop(from, dropMACConflict) }
	return s
}

// isolate reports whether the segment keeps its peers from one another.
func (s *segment) isolate(c *Cable) bool { return c.cfg.Isolate || s.conf.Isolate }

// floodRate is the frames a second one source may have flooded in s.
func (s *segment) floodRate(c *Cable) int {
	if s.conf.FloodRate > 0 {
		return s.conf.FloodRate
	}
	return c.cfg.floodRate()
}

// trailer is what the segment id adds to a frame of s.
func (s *segment) trailer() FrameMTU {
	if s.id == 0 {
		return 0
	}
	return segTrailer
}

// hasDefault reports whether the cable has a default segment: its own
// port, or a port per peer.
func (c *Cable) hasDefault() bool { return c.def.port != nil || c.cfg.PortPerPeer != nil }

// label is how logs, status and metrics name the segment.
func (s *segment) label() string {
	if s.id == 0 {
		return "default"
	}
	return s.name
}

// segments returns the cable's named segments; read without a lock.
func (c *Cable) segments() map[uint32]*segment {
	if m := c.segs.Load(); m != nil {
		return *m
	}
	return nil
}

// segmentNamed returns the named segment name, or nil.
func (c *Cable) segmentNamed(name string) *segment {
	if s := c.segments()[crypto.SegmentID(name)]; s != nil && s.name == name {
		return s
	}
	return nil
}

// allSegments returns the default segment and the named ones.
func (c *Cable) allSegments() []*segment {
	all := []*segment{c.def}
	for _, s := range c.segments() {
		all = append(all, s)
	}
	return all
}

// in returns p's flood policy in s, and whether p is in s at all.
func (p *peer) in(s *segment) (*policy, bool) {
	if s.id == 0 {
		return &p.policy, !p.noDefault.Load()
	}
	if m := p.member(s.id); m != nil && m.seg == s {
		return &m.pol, true
	}
	return nil, false
}

// member returns p's membership of the named segment id, or nil.
func (p *peer) member(id uint32) *membership {
	if m := p.segs.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// segmentOf takes the segment id off the end of a frame from p whose
// packet had flags, and returns the segment and the frame without it; nil
// (counted) when p is not in that segment.
func (c *Cable) segmentOf(p *peer, flags byte, frame []byte) (*segment, []byte) {
	if flags&crypto.FlagSegment == 0 {
		if p.noDefault.Load() {
			c.drop(p, dropSegment)
			return nil, nil
		}
		return c.def, frame
	}
	if len(frame) < segTrailer {
		c.drop(p, dropRunt)
		return nil, nil
	}
	id := binary.BigEndian.Uint32(frame[len(frame)-segTrailer:])
	m := p.member(id)
	if m == nil || m.seg.closed.Load() {
		c.drop(p, dropSegment)
		return nil, nil
	}
	return m.seg, frame[:len(frame)-segTrailer]
}

// startSegment starts the loop of s's port.
func (c *Cable) startSegment(s *segment) {
	c.segWG.Add(1)
	go func() {
		defer c.segWG.Done()
		defer close(s.done)
		err := c.portLoop(s, s.port, nil)
		if err != nil && !s.closed.Load() && !c.closing.Load() {
			c.log.Warn("segment port failed", "segment", s.name, "err", err)
		}
	}()
}

// forgetMACs forgets the MACs learned behind p in every segment.
func (c *Cable) forgetMACs(p *peer) {
	for _, s := range c.allSegments() {
		s.fdb.forget(p)
	}
}

// forgetSegment takes s out of every peer's memberships.
func (c *Cable) forgetSegment(s *segment) {
	for _, p := range c.peerList() {
		c.setMembers(p, func(m members) { delete(m, s.id) })
	}
}

// setMembers changes p's memberships with fn, on a copy.
func (c *Cable) setMembers(p *peer, fn func(members)) {
	p.segMu.Lock()
	defer p.segMu.Unlock()
	m := members{}
	if old := p.segs.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	fn(m)
	for id, old := range c.membersOf(p) {
		if m[id] != old {
			old.seg.fdb.forget(p)
		}
	}
	p.segs.Store(&m)
}

// membersOf returns p's memberships as they are.
func (c *Cable) membersOf(p *peer) members {
	if m := p.segs.Load(); m != nil {
		return *m
	}
	return nil
}

// SetSegments replaces the cable's named segments, for a live reload: a
// segment whose name and settings are unchanged keeps its port, MACs and
// members; a removed or changed one is left by every peer and its port
// closed; a new one (or the changed one again) gets its port from open and
// starts. The peers' joins are decided again and they are told (join.go).
func (c *Cable) SetSegments(segs []SegmentConfig, open func(SegmentConfig) (bridgeif.Port, error)) (added, removed int, err error) {
	want := map[uint32]SegmentConfig{}
	for _, sc := range segs {
		if err := CheckSegmentName(sc.Name); err != nil {
			return 0, 0, err
		}
		if _, dup := want[crypto.SegmentID(sc.Name)]; dup {
			return 0, 0, fmt.Errorf("segment %q listed twice (or its id is another's: rename it)", sc.Name)
		}
		want[crypto.SegmentID(sc.Name)] = sc
	}
	c.smu.Lock()
	old := c.segments()
	next := map[uint32]*segment{}
	var gone []*segment
	for id, s := range old {
		sc, ok := want[id]
		if ok && sameSegment(s.conf, sc) {
			next[id] = s
			delete(want, id)
			continue
		}
		gone = append(gone, s)
	}
	defer c.smu.Unlock()
	kept := maps.Clone(next)
	c.segs.Store(&kept) // the gone ones take no more frames
	for _, s := range gone {
		s.closed.Store(true)
		c.forgetSegment(s)
		s.port.Close()
		if c.running.Load() {
			<-s.done // its loop has stopped: nothing more from its port
		}
		c.log.Info("segment removed", "segment", s.name)
	}
	var fresh []*segment
	var errs []error
	for _, sc := range segs {
		if _, ok := want[crypto.SegmentID(sc.Name)]; !ok {
			continue
		}
		port, err := open(sc)
		if err != nil {
			errs = append(errs, fmt.Errorf("segment %s: %w", sc.Name, err))
			continue
		}
		sc.Port = port
		s := c.newSegment(sc)
		next[s.id] = s
		fresh = append(fresh, s)
	}
	c.segs.Store(&next)
	if c.running.Load() {
		for _, s := range fresh {
			c.startSegment(s)
			c.log.Info("segment added", "segment", s.name)
		}
	}
	c.rejoinAll()
	return len(fresh), len(gone), errors.Join(errs...)
}

// sameSegment reports whether two configurations of a segment are the
// same.
func sameSegment(a, b SegmentConfig) bool {
	if a.Name != b.Name || a.Spec != b.Spec || a.Isolate != b.Isolate || a.MaxMACs != b.MaxMACs || a.FloodRate != b.FloodRate ||
		len(a.AllowedVLANs) != len(b.AllowedVLANs) || (a.PSK == nil) != (b.PSK == nil) || a.PSK != nil && *a.PSK != *b.PSK {
		return false
	}
	for i := range a.AllowedVLANs {
		if a.AllowedVLANs[i] != b.AllowedVLANs[i] {
			return false
		}
	}
	return true
}

// segState is a peer's segments: its memberships, and what it asked for.
type segState struct {
	segMu     sync.Mutex               // serialises changes of segs
	segs      atomic.Pointer[members]  // the named segments the peer is in
	noDefault atomic.Bool              // the peer said it has no default segment
	join      joinState                // the join exchange (join.go)
	allowed   atomic.Pointer[[]string] // the segments the allow file lets it join
}

// deliveries are the frames a batch of packets delivers to ports, by
// segment, so that each port gets one WriteBatch.
type deliveries struct {
	segs  []*segment
	bufs  [][][]byte
	polls []*portReader // the readers of the ports flush wrote to
}

// add queues buf (the frame at offset HeaderLen) for s's port.
func (d *deliveries) add(s *segment, buf []byte) {
	for i, o := range d.segs {
		if o == s {
			d.bufs[i] = append(d.bufs[i], buf)
			return
		}
	}
	d.segs = append(d.segs, s)
	d.bufs = append(d.bufs, [][]byte{buf})
}

// pollMax is the most frames a delivery to a port may hold for the conn
// loop to poll the port after it (Cable.poll). A request, a ping, a lone
// segment: its answer leaves at once. A bulk delivery: the port loop is
// awake for the ACKs anyway, and polling would move their sealing onto the
// conn loop, the receiving side's busiest, and cost a read that finds
// nothing. Measured on cab-udp TCP×1 (bench.sh, three interleaved pairs):
// about 5 % less CPU per Gbit, the ping unchanged.
const pollMax = 4

// poll polls the ports flush wrote to (Cable.poll), for the replies their
// kernels queued at once.
func (d *deliveries) poll(c *Cable) {
	for _, r := range d.polls {
		c.poll(r)
	}
	clear(d.polls)
	d.polls = d.polls[:0]
}

// flush writes what was queued to the ports. It returns net.ErrClosed
// when the default segment's port is closed: the cable is ending.
func (d *deliveries) flush(c *Cable) error {
	var closed error
	for i, s := range d.segs {
		if len(d.bufs[i]) == 0 {
			continue
		}
		if _, err := s.port.WriteBatch(d.bufs[i], crypto.HeaderLen); err != nil && s.id == 0 && errors.Is(err, net.ErrClosed) {
			closed = err
		}
		if r := s.reader.Load(); r != nil && len(d.bufs[i]) <= pollMax {
			d.polls = append(d.polls, r)
		}
		clear(d.bufs[i])
		d.bufs[i] = d.bufs[i][:0]
	}
	return closed
}
