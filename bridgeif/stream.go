package bridgeif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// MaxStreamFrame is the longest frame a stream accepts: vde_plug (vdeplug4)
// accepts up to 9236 bytes.
const MaxStreamFrame = 9236

// A Deframer reads frames in vde_plug's stream format, a 2-byte big-endian
// length and the frame, from an io.Reader. It copes with lengths and frames
// split across reads anywhere, skips zero lengths, and allocates nothing in
// steady state.
type Deframer struct {
	r    io.Reader
	max  int
	buf  []byte
	head int // start of unread data in buf
	tail int // end of data in buf
}

// NewDeframer returns a Deframer of r accepting frames up to max bytes.
func NewDeframer(r io.Reader, max int) *Deframer {
	return &Deframer{r: r, max: max, buf: make([]byte, 2*(max+2)+4096)}
}

// ErrFrameTooLong is returned, wrapped, for a length above the maximum:
// the stream is not in the expected format, and cannot be resynchronised.
var ErrFrameTooLong = errors.New("stream: frame length exceeds the maximum")

// Next returns the next frame, valid until the next call. It returns
// io.EOF at the end of the stream (io.ErrUnexpectedEOF inside a frame).
func (d *Deframer) Next() ([]byte, error) {
	for {
		if n := d.tail - d.head; n >= 2 {
			l := int(binary.BigEndian.Uint16(d.buf[d.head:]))
			if l > d.max {
				return nil, fmt.Errorf("%w: %d > %d: not a vde_plug stream?", ErrFrameTooLong, l, d.max)
			}
			if l == 0 {
				d.head += 2
				continue
			}
			if n >= 2+l {
				f := d.buf[d.head+2 : d.head+2+l]
				d.head += 2 + l
				return f, nil
			}
		}
		if d.head > 0 && d.tail+d.max+2 > len(d.buf) { // make room
			d.tail = copy(d.buf, d.buf[d.head:d.tail])
			d.head = 0
		}
		m, err := d.r.Read(d.buf[d.tail:])
		d.tail += m
		if m > 0 {
			continue
		}
		if err == io.EOF {
			if d.tail > d.head {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
	}
}

// buffered reports whether Next can return a frame (or an error) without
// reading: a whole frame, after any zero lengths, is in the buffer.
func (d *Deframer) buffered() bool {
	for h := d.head; d.tail-h >= 2; h += 2 {
		l := int(binary.BigEndian.Uint16(d.buf[h:]))
		if l != 0 {
			return l > d.max || d.tail-h >= 2+l
		}
	}
	return false
}

// AppendFrame appends frame in the stream format to dst.
func AppendFrame(dst, frame []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(frame)))
	return append(dst, frame...)
}

// Stream is a Port of frames on a byte stream in vde_plug's format, such as
// stdin and stdout under dpipe, or an ssh pipe. At the end of the input
// stream, ReadBatch returns io.EOF.
type Stream struct {
	d      *Deframer
	closer func() error
	closed atomic.Bool

	wmu  sync.Mutex // guards w and wbuf
	w    io.Writer
	wbuf []byte
}

var _ Port = (*Stream)(nil)

// NewStream makes a Port that reads frames from r and writes them to w;
// closer (may be nil) is called by Close and must unblock a read of r.
// Each frame, length and bytes, goes out in a single Write, because a real
// vde_plug loses a frame whose header arrives split.
func NewStream(r io.Reader, w io.Writer, closer func() error) *Stream {
	return &Stream{d: NewDeframer(r, MaxStreamFrame), w: w, closer: closer}
}

// ReadBatch implements Port. It reads one frame per call.
func (s *Stream) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if s.closed.Load() {
			return 0, net.ErrClosed
		}
		f, err := s.d.Next()
		if err != nil {
			if s.closed.Load() {
				return 0, net.ErrClosed
			}
			return 0, err
		}
		if len(f) < 14 || len(f) > len(bufs[0])-offset {
			continue
		}
		sizes[0] = copy(bufs[0][offset:], f)
		n := 1
		for n < len(bufs) && s.d.buffered() {
			f, err := s.d.Next() // cannot block: a whole frame is buffered
			if err != nil {
				break
			}
			if len(f) < 14 || len(f) > len(bufs[n])-offset {
				continue
			}
			sizes[n] = copy(bufs[n][offset:], f)
			n++
		}
		return n, nil
	}
}

// WriteBatch implements Port: the frames go out in one Write.
func (s *Stream) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = s.wbuf[:0]
	for _, b := range bufs {
		f := b[offset:]
		if len(f) > MaxStreamFrame || len(f) == 0 {
			continue
		}
		s.wbuf = AppendFrame(s.wbuf, f)
	}
	if len(s.wbuf) == 0 {
		return len(bufs), nil
	}
	if _, err := s.w.Write(s.wbuf); err != nil {
		if s.closed.Load() {
			return 0, net.ErrClosed
		}
		return 0, fmt.Errorf("stream: write: %w", err)
	}
	return len(bufs), nil
}

// Close implements Port.
func (s *Stream) Close() error {
	if s.closed.Swap(true) || s.closer == nil {
		return nil
	}
	return s.closer()
}
