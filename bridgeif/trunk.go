package bridgeif

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// A Trunk carries several VLANs of one 802.1Q trunk port (a TAP that is a
// trunk port of Open vSwitch or of a VLAN-aware Linux bridge) as ports of
// their own: a frame read tagged with a VLAN id goes, untagged, to the
// VLANPort of that id; a frame written to a VLANPort leaves tagged with its
// id. One goroutine reads the trunk and hands each frame to its VLAN's
// queue; frames that are untagged or of a VLAN no port takes are dropped
// and counted. The trunk closes its port when its last VLANPort closes.
type Trunk struct {
	port    Port
	onEmpty func() // called once the last VLANPort closed

	mu      sync.Mutex // guards subs and started
	subs    map[uint16]*VLANPort
	started bool

	foreign atomic.Uint64 // frames dropped: untagged, or of no port's VLAN
	done    chan struct{} // closed when the reader ends
}

// trunkQueue is how many frames wait for a VLANPort's reader, and
// trunkBatch how many the trunk's reader takes at once.
const (
	trunkQueue = 256
	trunkBatch = 64
	vlanTagLen = 4
	tpid8021Q  = 0x8100
)

// NewTrunk makes a trunk of port. onEmpty, when set, is called after the
// last VLANPort closed (and port with it).
func NewTrunk(port Port, onEmpty func()) *Trunk {
	return &Trunk{port: port, onEmpty: onEmpty, subs: map[uint16]*VLANPort{}, done: make(chan struct{})}
}

// Foreign returns how many frames the trunk dropped as untagged or of a
// VLAN that no port takes.
func (t *Trunk) Foreign() uint64 { return t.foreign.Load() }

// VLAN opens the port of VLAN vid (1 to 4094) on the trunk.
func (t *Trunk) VLAN(vid uint16) (*VLANPort, error) {
	if vid < 1 || vid > 4094 {
		return nil, fmt.Errorf("vlan=%d: use a VLAN id from 1 to 4094", vid)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.subs == nil {
		return nil, net.ErrClosed
	}
	if t.subs[vid] != nil {
		return nil, fmt.Errorf("vlan=%d is open twice on this trunk: give each segment a VLAN of its own", vid)
	}
	p := &VLANPort{t: t, vid: vid, q: make(chan []byte, trunkQueue), free: make(chan []byte, trunkQueue), closed: make(chan struct{})}
	for range trunkQueue {
		p.free <- make([]byte, MaxFrame)
	}
	t.subs[vid] = p
	if !t.started {
		t.started = true
		go t.read()
	}
	return p, nil
}

// read hands the trunk's frames to their VLANs' ports until the trunk's
// port fails or closes.
func (t *Trunk) read() {
	defer close(t.done)
	bufs := make([][]byte, trunkBatch)
	for i := range bufs {
		bufs[i] = make([]byte, MaxFrame+vlanTagLen)
	}
	sizes := make([]int, trunkBatch)
	for {
		n, err := t.port.ReadBatch(bufs, sizes, 0)
		if err != nil {
			return
		}
		t.mu.Lock()
		for i := 0; i < n; i++ {
			t.deliver(bufs[i][:sizes[i]])
		}
		t.mu.Unlock()
	}
}

// deliver hands frame, read from the trunk, untagged to its VLAN's port.
// t.mu is held.
func (t *Trunk) deliver(frame []byte) {
	vid, ok := VLANOf(frame)
	p := t.subs[vid]
	if !ok || p == nil {
		t.foreign.Add(1)
		return
	}
	select {
	case b := <-p.free:
		n := copy(b, frame[:12])
		n += copy(b[n:], frame[12+vlanTagLen:])
		p.q <- b[:n]
	default:
		p.dropped.Add(1) // its reader is behind
	}
}

// VLANOf returns the VLAN id of an 802.1Q-tagged frame, and false for an
// untagged frame or one too short to carry an Ethernet header after its
// tag.
func VLANOf(frame []byte) (uint16, bool) {
	if len(frame) < ethHeaderLen+vlanTagLen || binary.BigEndian.Uint16(frame[12:14]) != tpid8021Q {
		return 0, false
	}
	vid := binary.BigEndian.Uint16(frame[14:16]) & 0x0fff
	return vid, vid != 0 && vid != 0xfff
}

// A VLANPort is one VLAN of a Trunk: frames read from it and written to
// it are untagged.
type VLANPort struct {
	t       *Trunk
	vid     uint16
	q, free chan []byte
	closed  chan struct{}
	once    sync.Once
	dropped atomic.Uint64
}

// VLAN returns the port's VLAN id.
func (p *VLANPort) VLAN() uint16 { return p.vid }

// Dropped returns how many frames of the port's VLAN were dropped because
// its reader was behind.
func (p *VLANPort) Dropped() uint64 { return p.dropped.Load() }

// ReadBatch reads the frames of the port's VLAN, untagged.
func (p *VLANPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	var b []byte
	select {
	case b = <-p.q:
	case <-p.closed:
		return 0, net.ErrClosed
	case <-p.t.done:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		if len(b) <= len(bufs[n])-offset {
			sizes[n] = copy(bufs[n][offset:], b)
			n++
		}
		p.free <- b[:cap(b)]
		if n == len(bufs) {
			return n, nil
		}
		select {
		case b = <-p.q:
		default:
			return n, nil
		}
	}
}

// WriteBatch writes the frames bufs[i][offset:] tagged with the port's
// VLAN. With offset 4 or more the tag is made in place: the MAC addresses
// move 4 bytes into the headroom in front of the frame, so the caller's
// bytes from bufs[i][offset-4] to bufs[i][offset+12] change (the cable
// hands a port frames it is done with). With less headroom the frames are
// copied first. Frames too short to be Ethernet frames are dropped, as
// every port drops them.
func (p *VLANPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	default:
	}
	w := vlanWriters.Get().(*vlanWriter)
	defer vlanWriters.Put(w)
	w.out = w.out[:0]
	out := offset - vlanTagLen
	if offset < vlanTagLen {
		out = 0
	}
	for _, b := range bufs {
		if len(b)-offset < ethHeaderLen || len(b)-offset > MaxFrame {
			continue
		}
		if offset < vlanTagLen {
			if len(w.copies) == len(w.out) {
				w.copies = append(w.copies, make([]byte, MaxFrame+vlanTagLen))
			}
			c := w.copies[len(w.out)]
			b = c[:copy(c[vlanTagLen:], b[offset:])+vlanTagLen]
			copy(b, b[vlanTagLen:vlanTagLen+12])
		} else {
			copy(b[out:], b[offset:offset+12])
		}
		binary.BigEndian.PutUint16(b[out+12:], tpid8021Q)
		binary.BigEndian.PutUint16(b[out+14:], p.vid)
		w.out = append(w.out, b)
	}
	dropped := len(bufs) - len(w.out)
	if len(w.out) == 0 {
		return dropped, nil
	}
	n, err := p.t.port.WriteBatch(w.out, out)
	clear(w.out)
	return n + dropped, err
}

// A vlanWriter is the state of one WriteBatch: the frames to hand to the
// trunk's port, and copies of frames written with less than 4 bytes of
// headroom.
type vlanWriter struct {
	out    [][]byte
	copies [][]byte
}

var vlanWriters = sync.Pool{New: func() any { return new(vlanWriter) }}

// Close closes the port; the last one closes the trunk's port.
func (p *VLANPort) Close() error {
	var err error
	p.once.Do(func() {
		close(p.closed)
		t := p.t
		t.mu.Lock()
		delete(t.subs, p.vid)
		last := len(t.subs) == 0
		if last {
			t.subs = nil
		}
		t.mu.Unlock()
		if last {
			err = t.port.Close()
			if t.onEmpty != nil {
				t.onEmpty()
			}
		}
	})
	return err
}

var _ Port = (*VLANPort)(nil)

// Offloads reports the offloads of the trunk's TAP, as TAP.Offloads does,
// for logs; "" when the trunk's port is no TAP.
func (p *VLANPort) Offloads() string {
	if o, ok := p.t.port.(interface{ Offloads() string }); ok {
		return o.Offloads()
	}
	return ""
}

// Trunk returns the trunk the port is a VLAN of.
func (p *VLANPort) Trunk() *Trunk { return p.t }
