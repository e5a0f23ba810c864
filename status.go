package cab

import (
	"net"
	"slices"
	"strings"
	"time"

	"cab/bridgeif"
	"cab/transport"
)

// PeerStatus is a snapshot of one peer, for `cab status` and tests.
type PeerStatus struct {
	Name          string            `json:"name"`
	PublicKey     string            `json:"public_key"`
	Up            bool              `json:"up"`
	UpSince       time.Time         `json:"up_since,omitzero"`
	Addr          string            `json:"addr,omitempty"`
	Transport     string            `json:"transport,omitempty"`
	LastHandshake time.Time         `json:"last_handshake,omitzero"`
	Handshakes    uint64            `json:"handshakes"`
	Cipher        string            `json:"cipher,omitempty"`
	RTT           time.Duration     `json:"rtt_ns,omitempty"`  // round-trip time, from transports that measure it
	WireMTU       int               `json:"wire_mtu"`          // largest packet on the path
	Fragmented    uint64            `json:"fragmented_frames"` // frames sent in fragments
	RxFrames      uint64            `json:"rx_frames"`
	RxBytes       uint64            `json:"rx_bytes"`
	TxFrames      uint64            `json:"tx_frames"`
	TxBytes       uint64            `json:"tx_bytes"`
	Drops         map[string]uint64 `json:"drops,omitempty"`
	MACs          int               `json:"macs"`
	// Segments are the named segments the peer is in, and "default"
	// when it is in the default one (empty on a cable without named
	// segments); Refused says why it is not in the others it asked for.
	Segments []string          `json:"segments,omitempty"`
	Refused  map[string]string `json:"refused,omitempty"`
	// Path is how the transport sees the path, for transports that tell
	// (dns: queries per second, loss, round-trip time).
	Path *transport.PathStats `json:"path,omitempty"`
	// DuplicateKey, while set, says that a second client holds this
	// peer's key: which one the cable keeps and which it holds off.
	DuplicateKey *DuplicateKey `json:"duplicate_key,omitempty"`
}

// Status is a snapshot of a cable.
type Status struct {
	Peers []PeerStatus      `json:"peers"`
	Drops map[string]uint64 `json:"drops,omitempty"` // drops not attributable to a peer
	FDB   int               `json:"fdb_entries"`
	// MSSClamped counts TCP SYNs whose MSS the cable lowered.
	MSSClamped uint64 `json:"mss_clamped"`
	// Polled counts the frames from the ports that the receive path took
	// right after writing to a port (replies the kernel made at once)
	// without waking the port's reader; SegmentStatus.Polled per segment.
	Polled uint64 `json:"frames_polled"`
	// Carrier is the port's carrier as the cable last set it, "up" or
	// "down", when the cable follows the peers with it (Config.Carrier);
	// empty when it leaves the carrier alone.
	Carrier string `json:"carrier,omitempty"`
	// FDBFlushes counts the times the MAC table was forgotten because a
	// spanning-tree BPDU announced a topology change.
	FDBFlushes uint64 `json:"fdb_flushes"`
	// DeadAfter is Config.DeadAfter: fast failure detection, 0 when off.
	DeadAfter time.Duration `json:"dead_after_ns,omitempty"`
	// Segments are the cable's segments, the default one first, when it
	// has named ones.
	Segments []SegmentStatus `json:"segments,omitempty"`
}

// SegmentStatus is one segment of a cable.
type SegmentStatus struct {
	Name      string   `json:"name"` // "default" for the cable's own port
	ID        uint32   `json:"id"`   // on the wire
	Peers     []string `json:"peers"`
	MACs      int      `json:"fdb_entries"`
	FromPeers uint64   `json:"frames_from_peers"`
	FromPort  uint64   `json:"frames_from_port"`
	// Polled counts the frames from the port that the receive path took
	// right after writing to the port (replies the kernel made at once),
	// without waking the port's reader.
	Polled uint64 `json:"frames_polled"`
}

// FDBEntry is one learned MAC address, for `cab status --fdb`.
type FDBEntry struct {
	MAC  string        `json:"mac"`
	VLAN uint16        `json:"vlan,omitempty"`
	Peer string        `json:"peer"` // "" for the local port
	Age  time.Duration `json:"age_ns"`
	// Segment is the segment the entry is in: "default", or a name.
	Segment string `json:"segment"`
}

// FDB returns the cable's MAC table.
func (c *Cable) FDB() []FDBEntry {
	now := time.Now().UnixNano()
	var out []FDBEntry
	for _, seg := range c.allSegments() {
		seg.fdb.each(func(k macKey, e *fdbEntry) {
			fe := FDBEntry{MAC: net.HardwareAddr(k.mac[:]).String(), VLAN: k.vlan, Age: time.Duration(now - e.seen.Load()), Segment: seg.label()}
			if e.peer != nil {
				fe.Peer = e.peer.name()
			}
			out = append(out, fe)
		})
	}
	return out
}

// Status returns a snapshot of the cable's peers and counters.
func (c *Cable) Status() Status {
	st := Status{Drops: dropMap(&c.unattributed), MSSClamped: c.clamped.Load(), DeadAfter: c.cfg.DeadAfter,
		FDBFlushes: c.flushes.Load()}
	st.Carrier = c.carrierStatus()
	for _, conn := range c.conns {
		dc, ok := conn.(transport.DropCounter)
		if !ok {
			continue
		}
		for reason, n := range dc.DropCounts() {
			if n == 0 {
				continue
			}
			if st.Drops == nil {
				st.Drops = make(map[string]uint64)
			}
			st.Drops[transportName(conn)+"_"+reason] += n
		}
	}
	macs := make(map[*peer]int)
	named := len(c.segments()) > 0
	trunks := map[*bridgeif.Trunk]bool{}
	for _, seg := range c.allSegments() {
		if vp, ok := seg.port.(*bridgeif.VLANPort); ok {
			// Frames a trunk TAP read that no VLAN port takes, once per
			// trunk; frames a VLAN's reader was too slow for.
			if tr := vp.Trunk(); !trunks[tr] {
				trunks[tr] = true
				addDrops(&st, "vlan_foreign", tr.Foreign())
			}
			addDrops(&st, "vlan_queue_full", vp.Dropped())
		}
		st.FDB += seg.fdb.len()
		st.Polled += seg.polled.Load()
		ss := SegmentStatus{Name: seg.label(), ID: seg.id, MACs: seg.fdb.len(), FromPeers: seg.fromPeers.Load(), FromPort: seg.fromPort.Load(), Polled: seg.polled.Load(), Peers: []string{}}
		for _, p := range c.peerList() {
			macs[p] += seg.fdb.macsOf(p)
			if _, in := p.in(seg); in && p.hs.cur.Load() != nil {
				ss.Peers = append(ss.Peers, p.name())
			}
		}
		if named && (seg.id != 0 || c.hasDefault()) {
			st.Segments = append(st.Segments, ss)
		}
	}
	// The default segment first (allSegments puts it first), then by name.
	first := 0
	if len(st.Segments) > 0 && st.Segments[0].ID == 0 {
		first = 1
	}
	slices.SortFunc(st.Segments[first:], func(a, b SegmentStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range c.peerList() {
		ps := p.status(macs[p])
		if named {
			ps.Segments, ps.Refused = c.segmentsOf(p)
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// segmentsOf returns the segments p is in, by name, and why it is not in
// the others it asked for.
func (c *Cable) segmentsOf(p *peer) (in []string, refused map[string]string) {
	for _, m := range c.membersOf(p) {
		in = append(in, m.seg.name)
	}
	slices.Sort(in)
	if _, ok := p.in(c.def); ok && c.hasDefault() {
		in = append([]string{"default"}, in...)
	}
	p.join.mu.Lock()
	for name, why := range p.join.told {
		if why != "" {
			if refused == nil {
				refused = map[string]string{}
			}
			refused[name] = why
		}
	}
	p.join.mu.Unlock()
	return in, refused
}

// addDrops adds n drops for reason to st's, when there are any.
func addDrops(st *Status, reason string, n uint64) {
	if n == 0 {
		return
	}
	if st.Drops == nil {
		st.Drops = make(map[string]uint64)
	}
	st.Drops[reason] += n
}

func dropMap(d *[numDropReasons]atomicCounter) map[string]uint64 {
	var m map[string]uint64
	for r := range d {
		if n := d[r].Load(); n != 0 {
			if m == nil {
				m = make(map[string]uint64)
			}
			m[dropReason(r).String()] = n
		}
	}
	return m
}

// transportName is a conn's URL scheme ("udp"), when it tells.
func transportName(conn transport.Conn) string {
	if s, ok := conn.(transport.Schemer); ok {
		return s.Scheme()
	}
	return ""
}

// status is p's part of Status, with macs MACs learned behind it.
func (p *peer) status(macs int) PeerStatus {
	ps := PeerStatus{
		Name:       p.name(),
		PublicKey:  p.key.String(),
		Up:         p.live.up.Load(),
		Handshakes: p.stats.handshakes.Load(),
		RxFrames:   p.stats.rxFrames.Load(),
		RxBytes:    p.stats.rxBytes.Load(),
		TxFrames:   p.stats.txFrames.Load(),
		TxBytes:    p.stats.txBytes.Load(),
		Drops:      dropMap(&p.stats.drops),
		MACs:       macs,
		WireMTU:    int(p.route.wireMTU.Load()),
		Fragmented: p.route.fragmented.Load(),

		DuplicateKey: p.duplicate(time.Now().UnixNano()),
	}
	if ps.Up {
		ps.UpSince = time.Unix(0, p.live.upSince.Load())
	}
	if t := p.live.lastHandshake.Load(); t != 0 {
		ps.LastHandshake = time.Unix(0, t)
	}
	if pt := p.route.path.Load(); pt != nil {
		ps.Addr = pt.addr.String()
		ps.Transport = transportName(pt.conn)
		if r, ok := pt.conn.(transport.RTTer); ok {
			ps.RTT = r.RTT(pt.addr)
		}
		if pr, ok := pt.conn.(transport.PathStatser); ok {
			if st, ok := pr.PathStats(pt.addr); ok {
				ps.Path = &st
				if ps.RTT == 0 {
					ps.RTT = st.RTT
				}
			}
		}
	}
	if s := p.hs.cur.Load(); s != nil {
		ps.Cipher = s.Cipher().String()
	}
	return ps
}
