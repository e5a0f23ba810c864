package bridgeif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// stdioFrame is a test frame of n bytes whose content depends on seed.
func stdioFrame(seed, n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(seed*31 + i*7)
	}
	return f
}

// stdioDeframeAll reads r to its end with a Deframer of maximum max and
// returns copies of the frames and the error that ended it (nil for EOF).
func stdioDeframeAll(r io.Reader, max int) ([][]byte, error) {
	d := NewDeframer(r, max)
	var out [][]byte
	for {
		f, err := d.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(nil), f...))
	}
}

func stdioSameFrames(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: frame %d differs (%d bytes, want %d)", what, i, len(got[i]), len(want[i]))
		}
	}
}

// TestStdioDeframerEveryBoundary delivers a multi-frame stream, with zero
// lengths among the frames, one byte at a time, in odd chunks, and split
// in two at every byte boundary.
func TestStdioDeframerEveryBoundary(t *testing.T) {
	want := [][]byte{stdioFrame(1, 14), stdioFrame(2, 60), stdioFrame(3, 1), stdioFrame(4, 300), stdioFrame(5, 1514), stdioFrame(6, 256)}
	var stream []byte
	stream = append(stream, 0, 0) // a zero length first
	for i, f := range want {
		stream = AppendFrame(stream, f)
		if i%2 == 0 {
			stream = append(stream, 0, 0) // and between frames
		}
	}
	check := func(what string, r io.Reader) {
		t.Helper()
		got, err := stdioDeframeAll(r, MaxStreamFrame)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		stdioSameFrames(t, what, got, want)
	}
	check("whole", bytes.NewReader(stream))
	check("one byte at a time", iotest.OneByteReader(bytes.NewReader(stream)))
	check("half reads", iotest.HalfReader(bytes.NewReader(stream)))
	check("data with EOF", iotest.DataErrReader(bytes.NewReader(stream)))
	for cut := 0; cut <= len(stream); cut++ {
		check(fmt.Sprintf("cut at %d", cut), io.MultiReader(bytes.NewReader(stream[:cut]), bytes.NewReader(stream[cut:])))
	}
	// Three-way splits around the headers, where a split hurts most.
	for _, a := range []int{1, 2, 3, 17, 18, 19} {
		for b := a; b <= a+4 && b <= len(stream); b++ {
			check(fmt.Sprintf("cuts at %d and %d", a, b), io.MultiReader(bytes.NewReader(stream[:a]), bytes.NewReader(stream[a:b]), bytes.NewReader(stream[b:])))
		}
	}
}

// TestStdioDeframerLimits: the largest accepted length, one above it, and
// the end of the stream in every position.
func TestStdioDeframerLimits(t *testing.T) {
	// vdeplug4 takes frames of up to 9234 bytes (MaxFrame + 18).
	big := stdioFrame(7, MaxFrame+18)
	got, err := stdioDeframeAll(bytes.NewReader(AppendFrame(nil, big)), MaxStreamFrame)
	if err != nil {
		t.Fatalf("frame of MaxFrame+18 bytes: %v", err)
	}
	stdioSameFrames(t, "MaxFrame+18", got, [][]byte{big})

	// A length above the maximum ends the stream with a clear error,
	// after the frames before it, and for good.
	over := MaxStreamFrame + 1
	stream := AppendFrame(nil, stdioFrame(8, 60))
	stream = binary.BigEndian.AppendUint16(stream, uint16(over))
	stream = append(stream, stdioFrame(9, 100)...)
	d := NewDeframer(bytes.NewReader(stream), MaxStreamFrame)
	if f, err := d.Next(); err != nil || len(f) != 60 {
		t.Fatalf("frame before the bad length: %d bytes, %v", len(f), err)
	}
	_, err = d.Next()
	if !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("oversize length: %v", err)
	}
	for _, w := range []string{fmt.Sprint(over), fmt.Sprint(MaxStreamFrame), "not a vde_plug stream"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("oversize error %q does not mention %q", err, w)
		}
	}
	if _, err2 := d.Next(); !errors.Is(err2, ErrFrameTooLong) {
		t.Fatalf("the stream went on after an oversize length: %v", err2)
	}
	// A smaller maximum is honoured.
	if _, err := stdioDeframeAll(bytes.NewReader(AppendFrame(nil, stdioFrame(1, 1519))), 1518); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("1519 bytes with a maximum of 1518: %v", err)
	}

	// The end of the stream: io.EOF on a frame boundary, an unexpected
	// EOF anywhere inside a header or a frame.
	whole := AppendFrame(AppendFrame(nil, stdioFrame(1, 20)), stdioFrame(2, 30))
	for end := 0; end <= len(whole); end++ {
		got, err := stdioDeframeAll(bytes.NewReader(whole[:end]), MaxStreamFrame)
		switch end {
		case 0, 22, len(whole):
			if err != nil {
				t.Errorf("end at %d: %v, want io.EOF", end, err)
			}
		default:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("end at %d: %v, want io.ErrUnexpectedEOF", end, err)
			}
		}
		if wantN := map[bool]int{true: 1, false: 0}[end >= 22] + map[bool]int{true: 1, false: 0}[end == len(whole)]; len(got) != wantN {
			t.Errorf("end at %d: %d frames, want %d", end, len(got), wantN)
		}
	}
	// A reader error other than EOF is passed on.
	boom := errors.New("boom")
	if _, err := stdioDeframeAll(io.MultiReader(bytes.NewReader([]byte{0}), iotest.ErrReader(boom)), MaxStreamFrame); !errors.Is(err, boom) {
		t.Fatalf("reader error: %v", err)
	}
}

// TestStdioDeframerSteadyStateAllocs: Next allocates nothing once running.
func TestStdioDeframerSteadyStateAllocs(t *testing.T) {
	one := AppendFrame(nil, stdioFrame(1, 1514))
	r := &stdioRepeater{b: one}
	d := NewDeframer(r, MaxStreamFrame)
	d.Next()
	if a := testing.AllocsPerRun(1000, func() {
		if f, err := d.Next(); err != nil || len(f) != 1514 {
			t.Fatalf("%d %v", len(f), err)
		}
	}); a != 0 {
		t.Fatalf("Next allocates %v times per frame", a)
	}
	var dst []byte
	f := stdioFrame(2, 1514)
	dst = AppendFrame(dst[:0], f)
	if a := testing.AllocsPerRun(1000, func() { dst = AppendFrame(dst[:0], f) }); a != 0 {
		t.Fatalf("AppendFrame into a big enough buffer allocates %v times", a)
	}
}

// stdioRepeater returns b over and over, in pieces of 1000 bytes.
type stdioRepeater struct {
	b   []byte
	off int
}

func (r *stdioRepeater) Read(p []byte) (int, error) {
	n := copy(p[:min(len(p), 1000)], r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// stdioWrites records every Write call, safely for concurrent writers.
type stdioWrites struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *stdioWrites) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, append([]byte(nil), b...))
	return len(b), nil
}

func (w *stdioWrites) all() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Join(w.writes, nil)
}

// withHeadroom returns frames copied behind off bytes of headroom.
func withHeadroom(off int, fs ...[]byte) [][]byte {
	out := make([][]byte, len(fs))
	for i, f := range fs {
		out[i] = append(bytes.Repeat([]byte{0xee}, off), f...)
	}
	return out
}

// TestStdioOneWritePerBatch: length and frame always go out in one Write
// (a real vde_plug loses a split header); a batch is one Write; concurrent
// batches never interleave.
func TestStdioOneWritePerBatch(t *testing.T) {
	w := &stdioWrites{}
	s := NewStream(bytes.NewReader(nil), w, nil)
	one := stdioFrame(1, 1514)
	if n, err := s.WriteBatch(withHeadroom(32, one), 32); n != 1 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	if len(w.writes) != 1 || !bytes.Equal(w.writes[0], AppendFrame(nil, one)) {
		t.Fatalf("one frame: %d writes, want 1 with header and frame", len(w.writes))
	}
	three := [][]byte{stdioFrame(2, 60), stdioFrame(3, 9216), stdioFrame(4, 14)}
	if n, err := s.WriteBatch(withHeadroom(16, three...), 16); n != 3 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	if len(w.writes) != 2 {
		t.Fatalf("three frames: %d more writes, want 1", len(w.writes)-1)
	}
	got, err := stdioDeframeAll(bytes.NewReader(w.writes[1]), MaxStreamFrame)
	if err != nil {
		t.Fatal(err)
	}
	stdioSameFrames(t, "batch", got, three)

	// Concurrent writers: every Write holds whole frames, and the stream
	// as a whole parses back into all the frames.
	w = &stdioWrites{}
	s = NewStream(bytes.NewReader(nil), w, nil)
	var wg sync.WaitGroup
	const writers, batches = 8, 50
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range batches {
				fs := [][]byte{stdioFrame(g*1000+i, 14+i*13%1500), stdioFrame(g*1000+i+500, 60)}
				if _, err := s.WriteBatch(withHeadroom(8, fs...), 8); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, b := range w.writes {
		if _, err := stdioDeframeAll(bytes.NewReader(b), MaxStreamFrame); err != nil {
			t.Fatalf("write %d does not hold whole frames: %v", i, err)
		}
	}
	got, err = stdioDeframeAll(bytes.NewReader(w.all()), MaxStreamFrame)
	if err != nil || len(got) != writers*batches*2 {
		t.Fatalf("concurrent writers: %d frames, %v; want %d", len(got), err, writers*batches*2)
	}
}

// TestStdioPipeRoundTrip joins two Streams with two pipes, as dpipe does,
// and sends frames both ways, in batches, with headroom.
func TestStdioPipeRoundTrip(t *testing.T) {
	abR, abW := io.Pipe()
	baR, baW := io.Pipe()
	a := NewStream(baR, abW, func() error { baR.Close(); return abW.Close() })
	b := NewStream(abR, baW, func() error { abR.Close(); return baW.Close() })
	defer a.Close()
	defer b.Close()

	send := func(from, to *Stream, what string) {
		t.Helper()
		want := [][]byte{stdioFrame(1, 14), stdioFrame(2, 60), stdioFrame(3, 1514), stdioFrame(4, MaxFrame)}
		runt := stdioFrame(5, 13) // skipped by the reader
		go func() {
			from.WriteBatch(withHeadroom(16, want[0], runt, want[1]), 16)
			from.WriteBatch(withHeadroom(16, want[2:]...), 16)
		}()
		bufs := make([][]byte, 4)
		for i := range bufs {
			bufs[i] = make([]byte, 16+MaxFrame)
		}
		sizes := make([]int, len(bufs))
		var got [][]byte
		for len(got) < len(want) {
			n, err := to.ReadBatch(bufs, sizes, 16)
			if err != nil || n < 1 || n > len(bufs) {
				t.Fatalf("%s: read: %d %v", what, n, err)
			}
			for i := range n {
				got = append(got, append([]byte(nil), bufs[i][16:16+sizes[i]]...))
			}
		}
		stdioSameFrames(t, what, got, want)
	}
	send(a, b, "a to b")
	send(b, a, "b to a")

	// A frame too long for the caller's buffer is dropped, not cut.
	go a.WriteBatch([][]byte{stdioFrame(6, 1000), stdioFrame(7, 100)}, 0)
	small := [][]byte{make([]byte, 16+500)}
	sizes := []int{0}
	if n, err := b.ReadBatch(small, sizes, 16); err != nil || n != 1 || sizes[0] != 100 {
		t.Fatalf("after a frame too long for the buffer: n=%d size=%d %v, want the next frame of 100", n, sizes[0], err)
	}
}

// TestStdioEOFAndClose: the end of the input is io.EOF (cab then exits 0);
// Close unblocks a read blocked on a pipe or on a real file descriptor;
// after Close everything returns net.ErrClosed.
func TestStdioEOFAndClose(t *testing.T) {
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	s := NewStream(bytes.NewReader(AppendFrame(nil, stdioFrame(1, 60))), io.Discard, nil)
	if n, err := s.ReadBatch(bufs, sizes, 0); n != 1 || err != nil {
		t.Fatalf("read: %d %v", n, err)
	}
	if _, err := s.ReadBatch(bufs, sizes, 0); err != io.EOF {
		t.Fatalf("at the end of the input: %v, want io.EOF", err)
	}

	pr, _ := io.Pipe()
	osr, osw, err := os.Pipe() // like stdin after OpenStdio made it non-blocking
	if err != nil {
		t.Fatal(err)
	}
	defer osw.Close()
	for what, s := range map[string]*Stream{
		"io.Pipe": NewStream(pr, io.Discard, pr.Close),
		"os.Pipe": NewStream(osr, io.Discard, osr.Close),
	} {
		errc := make(chan error, 1)
		go func() {
			_, err := s.ReadBatch(bufs, sizes, 0)
			errc <- err
		}()
		select {
		case err := <-errc:
			t.Fatalf("%s: ReadBatch returned before Close: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%s: close: %v", what, err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s: blocked read after Close: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Close did not unblock ReadBatch", what)
		}
		if _, err := s.ReadBatch(bufs, sizes, 0); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s: read after Close: %v", what, err)
		}
		if _, err := s.WriteBatch(withHeadroom(0, stdioFrame(1, 60)), 0); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s: write after Close: %v", what, err)
		}
		s.Close() // twice is fine
	}
}

// FuzzDeframerReencode: the deframer never panics, never returns an empty
// frame or one above its maximum, and the frames it returns, encoded again
// and parsed again, come back the same, however the input is split.
func FuzzDeframerReencode(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, stdioFrame(1, 60)), stdioFrame(2, 14)), uint8(1))
	f.Add([]byte{0, 0, 0, 0, 0, 3, 1, 2, 3}, uint8(2))
	f.Add([]byte{0x04, 0x01}, uint8(0))
	f.Add([]byte{0xff, 0xff, 0, 1}, uint8(3))
	f.Add(AppendFrame(nil, stdioFrame(3, 1000)), uint8(7))
	f.Add([]byte{0}, uint8(1))
	const max = 1000
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var r io.Reader = bytes.NewReader(in)
		if chunk > 0 {
			r = &stdioChunks{b: in, n: int(chunk)}
		}
		got, err := stdioDeframeAll(r, max)
		for _, g := range got {
			if len(g) == 0 || len(g) > max {
				t.Fatalf("frame of %d bytes (maximum %d)", len(g), max)
			}
		}
		if err != nil && !errors.Is(err, ErrFrameTooLong) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error %v", err)
		}
		var again []byte
		for _, g := range got {
			again = AppendFrame(again, g)
		}
		back, err := stdioDeframeAll(iotest.OneByteReader(bytes.NewReader(again)), max)
		if err != nil {
			t.Fatalf("re-encoded frames: %v", err)
		}
		stdioSameFrames(t, "re-encoded", back, got)
	})
}

// stdioChunks reads b in pieces of n bytes.
type stdioChunks struct {
	b []byte
	n int
}

func (c *stdioChunks) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}
