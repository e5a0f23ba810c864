// Package bridgeif defines Port, a local L2 attachment that reads and writes
// Ethernet frames, and its implementations: TAP devices, VDE switch ports and
// stdio in vde_plug's stream format.
package bridgeif

// A Port is a local Ethernet attachment: a TAP device, a VDE switch port, a
// stream on stdin/stdout. A frame is destination MAC first, with no FCS.
//
// ReadBatch blocks until at least one frame is available, then reads up to
// len(bufs) frames: frame i lands in bufs[i][offset:offset+sizes[i]]. The
// offset leaves headroom in front of each frame so that the caller can write
// a header there and seal in place. The caller owns bufs; a frame longer than
// len(bufs[i])-offset is dropped. Only one ReadBatch may run at a time.
//
// WriteBatch writes the frames bufs[i][offset:] in order and returns how many
// it wrote. A frame the port cannot take (too long, too short) is dropped
// without error. WriteBatch may be called from several goroutines at once,
// concurrently with ReadBatch; it keeps no reference to bufs.
//
// After Close, ReadBatch and WriteBatch return net.ErrClosed (possibly
// wrapped), and a blocked ReadBatch returns promptly.
type Port interface {
	ReadBatch(bufs [][]byte, sizes []int, offset int) (n int, err error)
	WriteBatch(bufs [][]byte, offset int) (n int, err error)
	Close() error
}

// A Poller is a Port whose reader may be split in two: TryReadBatch, which
// takes what is queued without waiting, and WaitRead, which waits for more.
// The cable's port loop alternates them; a goroutine that has just written
// a frame to the port may call TryReadBatch too, so that the reply the
// kernel queued while the write ran (an ICMP echo reply, a TCP ACK) goes on
// at once, without waking the port loop: one wake-up less per round trip.
//
// TryReadBatch is ReadBatch that returns 0 and no error when nothing is
// queued; callers serialize TryReadBatch calls among themselves, but a
// TryReadBatch may run while WaitRead waits. WaitRead returns when a frame
// may be queued (it may return early), and net.ErrClosed (possibly wrapped)
// after Close.
type Poller interface {
	TryReadBatch(bufs [][]byte, sizes []int, offset int) (n int, err error)
	WaitRead() error
}

// A Carrier is a Port whose link state its neighbours see: the carrier of
// a TAP (IFF_LOWER_UP), which the Linux bridge, Open vSwitch, bonding's MII
// monitor and routing daemons follow as they would a real cable's. The
// cable calls SetCarrier(true) when its first peer comes up and
// SetCarrier(false) when its last peer goes down. The Linux TAP implements
// it (TUNSETCARRIER, Linux 5.0 and later); ports with no link state of
// their own (a VDE switch port, stdio) do not, and the cable leaves them
// alone. SetCarrier may be called concurrently with ReadBatch and
// WriteBatch; after Close it returns net.ErrClosed.
type Carrier interface {
	SetCarrier(up bool) error
}

// MaxFrame is the largest frame a Port passes: a 9216-byte jumbo frame, the
// largest that common switches accept.
const MaxFrame = 9216

// ethHeaderLen is the length of an Ethernet header, the shortest frame a
// port passes.
const ethHeaderLen = 14
