package bridgeif

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Verified: run on Linux by tap_offload_linux_test.go and offload_test.go,
// over real TAP devices with IFF_VNET_HDR in network namespaces.

// TUN_F_* offload flags (linux/if_tun.h).
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
	tunFUSO4   = 0x20
	tunFUSO6   = 0x40
)

// setOffloads asks the kernel for checksum, TCP and (from Linux 6.2) UDP
// segmentation offloads on the TAP queue fd and returns those it took.
func setOffloads(fd int) uint {
	for _, f := range []uint{
		tunFCsum | tunFTSO4 | tunFTSO6 | tunFTSOECN | tunFUSO4 | tunFUSO6,
		tunFCsum | tunFTSO4 | tunFTSO6 | tunFTSOECN,
		tunFCsum,
	} {
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(f)) == nil {
			return f
		}
	}
	return 0
}

// Offloads reports the segmentation and checksum offloads the kernel
// accepted, for logs: "tso,uso,csum", "csum", or "" without offloads.
func (t *TAP) Offloads() string {
	if !t.vnet {
		return ""
	}
	s := ""
	if t.offloads&tunFTSO4 != 0 {
		s += "tso,"
	}
	if t.offloads&tunFUSO4 != 0 {
		s += "uso,"
	}
	if t.offloads&tunFCsum != 0 {
		s += "csum,"
	}
	if s == "" {
		return "vnet"
	}
	return s[:len(s)-1]
}

// OffloadStats counts the super-frames read from the kernel and cut into
// segments, those written to it glued from segments, and offload frames
// read that could not be cut and were dropped.
func (t *TAP) OffloadStats() (segmented, coalesced, malformed uint64) {
	return t.segmented.Load(), t.coalesced.Load(), t.bad.Load()
}

// readVnet reads one frame and its virtio_net_hdr into t.vhdr and t.rbuf,
// waiting when wait is set. It returns the frame's length, 0 for a frame it
// dropped, or an unwrapped error (EAGAIN among them).
func (t *TAP) readVnet(wait bool) (int, error) {
	t.iov[0].Base = &t.vhdr[0]
	t.iov[0].SetLen(vnetHdrLen)
	t.iov[1].Base = &t.rbuf[0]
	t.iov[1].SetLen(len(t.rbuf))
	err := t.rawRead(wait)
	switch {
	case err != nil:
		return 0, err
	case t.rerrno != 0:
		return 0, t.rerrno
	case t.rn < vnetHdrLen+ethHeaderLen || t.rn >= vnetHdrLen+len(t.rbuf):
		return 0, nil
	}
	return t.rn - vnetHdrLen, nil
}

// readBatchVnet is ReadBatch with offloads: frames are read one at a time
// into the TAP's own buffer, a super-frame is cut into segments, and every
// frame is copied into the caller's buffers with its checksums complete.
func (t *TAP) readBatchVnet(bufs [][]byte, sizes []int, offset int, wait bool) (int, error) {
	n := t.takeSegments(bufs, sizes, offset, 0)
	for tries := 0; n < len(bufs) && tries < 2*len(bufs); tries++ {
		size, err := t.readVnet(wait && n == 0)
		if err != nil {
			if n > 0 || !wait && err == unix.EAGAIN {
				break // EAGAIN: nothing queued; anything else comes back on the next call
			}
			return 0, t.opError("read", err)
		}
		if size == 0 {
			continue
		}
		f := t.rbuf[:size]
		var h vnetHdr
		h.decode(t.vhdr[:])
		if h.gsoType != gsoNone {
			if err := t.seg.start(h, f); err != nil {
				t.bad.Add(1)
				t.seg = segmenter{}
				continue
			}
			t.segmented.Add(1)
			n = t.takeSegments(bufs, sizes, offset, n)
			continue
		}
		if h.flags&vnetNeedsCsum != 0 && completeChecksum(f, int(h.csumStart), int(h.csumOffset)) != nil {
			t.bad.Add(1)
			continue
		}
		if size > len(bufs[n])-offset {
			continue // longer than the caller's buffer
		}
		sizes[n] = copy(bufs[n][offset:], f)
		n++
	}
	return n, nil
}

// takeSegments moves segments of the pending super-frame into bufs from
// index n on and returns the new count.
func (t *TAP) takeSegments(bufs [][]byte, sizes []int, offset, n int) int {
	for n < len(bufs) && !t.seg.done() {
		var dst []byte
		if offset < len(bufs[n]) {
			dst = bufs[n][offset:]
		}
		if size := t.seg.next(dst); size > 0 {
			sizes[n] = size
			n++
		}
	}
	if t.seg.done() {
		t.seg = segmenter{}
	}
	return n
}

// tapWriter is the state of one WriteBatch with offloads.
type tapWriter struct {
	hdr   [vnetHdrLen]byte
	iov   [2]unix.Iovec
	buf   []byte // a super-frame being built
	segs  []tcpSeg
	ok    []bool
	used  []bool
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool
}

func newTAPWriter() *tapWriter {
	w := &tapWriter{buf: make([]byte, 0, maxSuperFrame)}
	w.fn = w.write
	return w
}

// write is the raw writev of w.iov.
func (w *tapWriter) write(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return false
		}
		w.n, w.errno = int(n), e
		return true
	}
}

// writeFrame writes f after the header h.
func (t *TAP) writeFrame(w *tapWriter, h vnetHdr, f []byte) error {
	h.encode(w.hdr[:])
	w.iov[0].Base = &w.hdr[0]
	w.iov[0].SetLen(vnetHdrLen)
	w.iov[1].Base = &f[0]
	w.iov[1].SetLen(len(f))
	err := t.rc.Write(w.fn)
	w.iov[1] = unix.Iovec{}
	if err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}

// maxCoalesce bounds the segments glued into one super-frame.
const maxCoalesce = 64

// writeBatchVnet is WriteBatch with offloads: consecutive TCP segments of
// one flow in the batch go to the kernel as one super-frame, the rest one
// by one.
func (t *TAP) writeBatchVnet(bufs [][]byte, offset int) (int, error) {
	w := t.wpool.Get().(*tapWriter)
	defer t.wpool.Put(w)
	nb := len(bufs)
	if cap(w.segs) < nb {
		w.segs, w.ok, w.used = make([]tcpSeg, nb), make([]bool, nb), make([]bool, nb)
	}
	w.segs, w.ok, w.used = w.segs[:nb], w.ok[:nb], w.used[:nb]
	clear(w.ok)
	clear(w.used)
	for i, b := range bufs {
		if len(b)-offset >= ethHeaderLen {
			w.segs[i], w.ok[i] = parseTCPSeg(b[offset:])
		}
	}
	for i, b := range bufs {
		if w.used[i] || len(b)-offset < ethHeaderLen {
			continue
		}
		f := b[offset:]
		out, h := f, vnetHdr{}
		if w.ok[i] && !w.segs[i].psh {
			out, h = t.coalesce(w, bufs, offset, i)
		}
		err := t.writeFrame(w, h, out)
		if err != nil && (t.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD)) {
			return i, t.opError("write", err)
		}
	}
	return nb, nil
}

// coalesce glues to frame i the following segments of its flow that
// continue it, and returns the frame to write and its header: frame i alone
// with an empty header when nothing joins it.
func (t *TAP) coalesce(w *tapWriter, bufs [][]byte, offset, i int) ([]byte, vnetHdr) {
	first, s := bufs[i][offset:], w.segs[i]
	size := len(first) - s.hl
	next := s.seq + uint32(size)
	psh, count, total := false, 1, len(first)
	for j := i + 1; j < len(bufs) && count < maxCoalesce; j++ {
		if w.used[j] || !w.ok[j] {
			continue
		}
		f, sj := bufs[j][offset:], w.segs[j]
		if !sameFlow(first, s, f, sj) {
			continue
		}
		plen := len(f) - sj.hl
		if sj.seq != next || plen > size || total+plen > 65535+s.l3 {
			break
		}
		if count == 1 {
			w.buf = append(w.buf[:0], first...)
		}
		w.buf = append(w.buf, f[sj.hl:]...)
		total += plen
		w.used[j] = true
		next += uint32(plen)
		count++
		if sj.psh {
			psh = true
			break
		}
		if plen < size {
			break
		}
	}
	if count == 1 {
		return first, vnetHdr{}
	}
	t.coalesced.Add(1)
	return w.buf, superFrame(w.buf, s, size, psh)
}
