package cab

// Spanning-tree topology changes. A cab hub is a learning switch that
// takes no part in spanning tree, between bridges that do: when their
// tree changes (a cable's carrier dropped, a blocked port now forwards),
// the MACs the hub learned may sit behind the wrong peer, and frames for
// them would vanish until the hosts spoke again. So, as 802.1D asks of a
// bridge, the cable forgets what it learned when a BPDU that passes
// through it announces a topology change, and floods until it has learned
// again.

// BPDU layout after the 14-byte Ethernet header (802.3 length, then LLC):
// DSAP 0x42, SSAP 0x42, control 0x03, protocol id 0x0000, version, type,
// flags.
const (
	bpduLLC       = ethHeaderLen     // DSAP, SSAP, control
	bpduType      = ethHeaderLen + 6 // 0x00 configuration, 0x02 RST/MST, 0x80 TCN
	bpduFlags     = ethHeaderLen + 7
	bpduFlagTC    = 0x01
	bpduTypeTCN   = 0x80
	bpduTypeConf  = 0x00
	bpduTypeRST   = 0x02
	tcFlushMinGap = 500e6 // nanoseconds between two flushes: a change is announced for seconds
)

// bpduTopologyChange reports whether frame, sent to the bridge group
// address, is a spanning-tree BPDU that announces a topology change: a
// TCN BPDU, or a configuration or RST/MST BPDU with the TC flag.
func bpduTopologyChange(frame []byte) bool {
	if len(frame) <= bpduType || frame[12] >= 0x06 || // an EtherType, not an 802.3 length: not LLC
		frame[bpduLLC] != 0x42 || frame[bpduLLC+1] != 0x42 || frame[bpduLLC+2] != 0x03 ||
		frame[bpduLLC+3] != 0 || frame[bpduLLC+4] != 0 {
		return false
	}
	switch frame[bpduType] {
	case bpduTypeTCN:
		return true
	case bpduTypeConf, bpduTypeRST:
		return len(frame) > bpduFlags && frame[bpduFlags]&bpduFlagTC != 0
	}
	return false
}

// topologyChange forgets every MAC learned in seg, at most once per
// tcFlushMinGap, after a BPDU announced a topology change. An isolating
// cable keeps its MACs: there they are where each client may send from,
// not a guess of where a host is.
func (c *Cable) topologyChange(seg *segment, now int64) {
	if seg.isolate(c) {
		return
	}
	last := c.lastFlush.Load()
	if now-last < tcFlushMinGap || !c.lastFlush.CompareAndSwap(last, now) {
		return
	}
	n := seg.fdb.flush()
	c.flushes.Add(1)
	c.log.Debug("spanning-tree topology change: MAC table flushed", "entries", n)
}
