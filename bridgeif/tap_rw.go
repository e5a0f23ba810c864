package bridgeif

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
)

// rwPort is a Port over a device that passes one whole frame per Read and
// per Write: a TAP on FreeBSD (/dev/tapN), on macOS (a tuntaposx-style
// /dev/tapN through songgao/water) and on Windows (tap-windows6 through
// songgao/water). Its batches hold one frame. The Linux TAP does not use
// it (tap_linux.go reads and writes batches, with offloads); the tests run
// it on Linux over a water TAP and over an in-memory device.
//
// The device's Read must return one frame, and a Read into a buffer too
// short for the frame must either return more than the buffer's length
// (Linux) or fill the buffer (the BSDs): a frame that fills the buffer is
// taken as cut short and dropped, so the caller's buffers must have room
// for one byte more than the longest frame. Write must take one frame and
// be safe for concurrent use (os.File is; so is water's Windows device).
type rwPort struct {
	name    string
	rw      io.ReadWriteCloser
	closed  atomic.Bool
	dropped atomic.Uint64 // frames read and dropped: runts, too long
}

var _ Port = (*rwPort)(nil)

// maxRWReads bounds the frames one ReadBatch drops in a row before it
// returns, so that a stream of runts cannot hold a reader forever.
const maxRWReads = 1024

// ReadBatch implements Port: one blocking read, of one frame, into
// bufs[0][offset:]. A runt (shorter than an Ethernet header) or a frame
// that fills the buffer is dropped and counted; the next one is read. It
// allocates nothing.
func (p *rwPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	if len(bufs[0])-offset < ethHeaderLen {
		return 0, fmt.Errorf("tap %q: read: a buffer of %d bytes has no room for a frame at offset %d", p.name, len(bufs[0]), offset)
	}
	b := bufs[0][offset:]
	for range maxRWReads {
		if p.closed.Load() {
			return 0, p.opError("read", net.ErrClosed)
		}
		n, err := p.rw.Read(b)
		if err != nil {
			return 0, p.opError("read", err)
		}
		if n < ethHeaderLen || n >= len(b) {
			p.dropped.Add(1)
			continue
		}
		sizes[0] = n
		return 1, nil
	}
	return 0, nil
}

// WriteBatch implements Port: one write per frame. A runt, a frame longer
// than MaxFrame and a frame the device refuses are dropped; a closed port
// is an error.
func (p *rwPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if p.closed.Load() {
		return 0, p.opError("write", net.ErrClosed)
	}
	for i, b := range bufs {
		if len(b)-offset < ethHeaderLen || len(b)-offset > MaxFrame {
			continue
		}
		if _, err := p.rw.Write(b[offset:]); err != nil && (p.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)) {
			return i, p.opError("write", err)
		}
	}
	return len(bufs), nil
}

// Close implements Port: it closes the device; a second Close returns
// net.ErrClosed.
func (p *rwPort) Close() error {
	if p.closed.Swap(true) {
		return p.opError("close", net.ErrClosed)
	}
	if err := p.rw.Close(); err != nil {
		return fmt.Errorf("tap %q: close: %w", p.name, err)
	}
	return nil
}

// Dropped counts the frames read and dropped: runts and frames too long
// for the caller's buffer.
func (p *rwPort) Dropped() uint64 { return p.dropped.Load() }

// opError wraps err from operation op: net.ErrClosed once Close has run.
func (p *rwPort) opError(op string, err error) error {
	if p.closed.Load() || errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return fmt.Errorf("tap %q: %s: %w", p.name, op, err)
}
