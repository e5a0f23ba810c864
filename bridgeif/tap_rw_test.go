package bridgeif

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// frameDev is an in-memory device that passes one frame per Read and
// Write, as TAP devices do. A Read into a short buffer behaves like
// Linux's (returns the frame's full length) or, with bsd set, like the
// BSDs' (fills the buffer).
type frameDev struct {
	bsd    bool
	in     chan []byte // frames Read returns
	mu     sync.Mutex
	out    [][]byte // frames written
	closed chan struct{}
	once   sync.Once
}

func newFrameDev() *frameDev {
	return &frameDev{in: make(chan []byte, 16), closed: make(chan struct{})}
}

func (d *frameDev) Read(b []byte) (int, error) {
	select {
	case f := <-d.in:
		n := copy(b, f)
		if !d.bsd {
			n = len(f)
		}
		return n, nil
	case <-d.closed:
		return 0, io.ErrClosedPipe
	}
}

func (d *frameDev) Write(b []byte) (int, error) {
	select {
	case <-d.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.out = append(d.out, append([]byte(nil), b...))
	return len(b), nil
}

func (d *frameDev) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func frameOf(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

// Frames come out whole at the offset, one per batch; runts and frames
// that do not fit are dropped and counted, on both kinds of short read.
func TestRWPortReadBatch(t *testing.T) {
	for _, bsd := range []bool{false, true} {
		d := newFrameDev()
		d.bsd = bsd
		p := &rwPort{name: "fake0", rw: d}
		const off = 16
		bufs, sizes := rwBufs(4, off+100)
		d.in <- frameOf(13, 1)  // runt
		d.in <- frameOf(100, 2) // fills the buffer: taken as cut short
		d.in <- frameOf(150, 3) // longer than the buffer
		d.in <- frameOf(99, 4)  // the longest that fits
		d.in <- frameOf(14, 5)  // the shortest frame
		for _, want := range []struct {
			size int
			fill byte
		}{{99, 4}, {14, 5}} {
			n, err := p.ReadBatch(bufs, sizes, off)
			if err != nil || n != 1 || sizes[0] != want.size || !bytes.Equal(bufs[0][off:off+want.size], frameOf(want.size, want.fill)) {
				t.Fatalf("bsd=%v: ReadBatch = %d, %v, size %d; want one frame of %d", bsd, n, err, sizes[0], want.size)
			}
			if !bytes.Equal(bufs[0][:off], make([]byte, off)) {
				t.Fatalf("bsd=%v: the headroom was written", bsd)
			}
		}
		if p.Dropped() != 3 {
			t.Fatalf("bsd=%v: %d dropped, want 3", bsd, p.Dropped())
		}
	}
}

func TestRWPortWriteBatch(t *testing.T) {
	d := newFrameDev()
	p := &rwPort{name: "fake0", rw: d}
	const off = 8
	in := [][]byte{
		append(make([]byte, off), frameOf(60, 1)...),
		append(make([]byte, off), frameOf(13, 2)...),         // runt
		append(make([]byte, off), frameOf(MaxFrame+1, 3)...), // too long
		make([]byte, 3), // shorter than the offset
		append(make([]byte, off), frameOf(MaxFrame, 4)...),
	}
	if n, err := p.WriteBatch(in, off); n != len(in) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if len(d.out) != 2 || !bytes.Equal(d.out[0], frameOf(60, 1)) || !bytes.Equal(d.out[1], frameOf(MaxFrame, 4)) {
		t.Fatalf("written: %d frames", len(d.out))
	}
}

// Close unblocks a blocked ReadBatch with net.ErrClosed, and every call
// after it returns net.ErrClosed.
func TestRWPortClose(t *testing.T) {
	d := newFrameDev()
	p := &rwPort{name: "fake0", rw: d}
	bufs, sizes := rwBufs(1, 100)
	errc := make(chan error, 1)
	go func() {
		_, err := p.ReadBatch(bufs, sizes, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5 s after Close")
	}
	if _, err := p.ReadBatch(bufs, sizes, 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	if _, err := p.WriteBatch([][]byte{frameOf(60, 1)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	if err := p.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// A device error other than a close is returned, wrapped and named.
func TestRWPortReadError(t *testing.T) {
	p := &rwPort{name: "fake0", rw: struct {
		io.Reader
		io.Writer
		io.Closer
	}{errReader{}, io.Discard, io.NopCloser(nil)}}
	bufs, sizes := rwBufs(1, 100)
	if _, err := p.ReadBatch(bufs, sizes, 0); !errors.Is(err, errDeviceGone) || errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch: %v", err)
	}
	if _, err := p.ReadBatch(bufs, sizes, 95); err == nil {
		t.Fatal("a buffer with no room for a frame at the offset was accepted")
	}
}

var errDeviceGone = errors.New("device gone")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errDeviceGone }

// ReadBatch and WriteBatch allocate nothing.
func TestRWPortAllocatesNothing(t *testing.T) {
	d := newFrameDev()
	p := &rwPort{name: "fake0", rw: struct {
		io.Reader
		io.Writer
		io.Closer
	}{d, io.Discard, d}}
	bufs, sizes := rwBufs(1, 200)
	f := frameOf(60, 1)
	out := [][]byte{f}
	allocs := testing.AllocsPerRun(100, func() {
		d.in <- f
		if n, err := p.ReadBatch(bufs, sizes, 0); n != 1 || err != nil {
			t.Fatal(n, err)
		}
		p.WriteBatch(out, 0)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per read and write", allocs)
	}
}

// rwBufs returns n buffers of size bytes and their sizes.
func rwBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}
