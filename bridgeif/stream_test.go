package bridgeif

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"
)

func frames(sizes ...int) [][]byte {
	var out [][]byte
	for i, s := range sizes {
		out = append(out, bytes.Repeat([]byte{byte(i + 1)}, s))
	}
	return out
}

func encode(fs [][]byte) []byte {
	var b []byte
	for _, f := range fs {
		b = AppendFrame(b, f)
	}
	return b
}

func readAll(t *testing.T, r io.Reader) [][]byte {
	t.Helper()
	d := NewDeframer(r, MaxStreamFrame)
	var out [][]byte
	for {
		f, err := d.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), f...))
	}
}

func TestDeframerSplitEverywhere(t *testing.T) {
	want := frames(60, 1514, 14, 9216, 100)
	stream := encode(want)
	// One byte at a time.
	if got := readAll(t, iotest.OneByteReader(bytes.NewReader(stream))); len(got) != len(want) {
		t.Fatalf("one byte at a time: %d frames, want %d", len(got), len(want))
	}
	// Every two-way split.
	for cut := 0; cut <= len(stream); cut += 1 + cut/64 {
		r := io.MultiReader(bytes.NewReader(stream[:cut]), bytes.NewReader(stream[cut:]))
		got := readAll(t, r)
		if len(got) != len(want) {
			t.Fatalf("cut at %d: %d frames", cut, len(got))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("cut at %d: frame %d differs", cut, i)
			}
		}
	}
}

func TestDeframerBadInput(t *testing.T) {
	// Zero lengths are skipped.
	got := readAll(t, bytes.NewReader(append([]byte{0, 0, 0, 0}, encode(frames(20))...)))
	if len(got) != 1 || len(got[0]) != 20 {
		t.Fatalf("zero lengths: %v", got)
	}
	// An oversize length ends the stream with a clear error.
	d := NewDeframer(bytes.NewReader([]byte{0xff, 0xff, 1, 2, 3}), MaxStreamFrame)
	if _, err := d.Next(); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("oversize: %v", err)
	}
	// Truncated inside a frame.
	d = NewDeframer(bytes.NewReader([]byte{0, 10, 1, 2}), MaxStreamFrame)
	if _, err := d.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
}

// writeRecorder records each Write call.
type writeRecorder struct{ writes [][]byte }

func (w *writeRecorder) Write(b []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), b...))
	return len(b), nil
}

func TestStreamPort(t *testing.T) {
	pr, pw := io.Pipe()
	rec := &writeRecorder{}
	s := NewStream(pr, rec, func() error { return pr.Close() })
	go pw.Write(encode(frames(60, 5, 100))) // the 5-byte frame is a runt: skipped
	bufs := [][]byte{make([]byte, 200)}
	sizes := []int{0}
	for _, want := range []int{60, 100} {
		n, err := s.ReadBatch(bufs, sizes, 16)
		if err != nil || n != 1 || sizes[0] != want {
			t.Fatalf("read: n=%d size=%d err=%v, want %d", n, sizes[0], err, want)
		}
	}
	// Two frames, one Write, each with its header.
	out := [][]byte{append(make([]byte, 16), bytes.Repeat([]byte{7}, 60)...), append(make([]byte, 16), bytes.Repeat([]byte{8}, 70)...)}
	if _, err := s.WriteBatch(out, 16); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || len(rec.writes[0]) != 2+60+2+70 || rec.writes[0][1] != 60 {
		t.Fatalf("writes: %d, first %d bytes", len(rec.writes), len(rec.writes[0]))
	}
	// Close unblocks a blocked read.
	errc := make(chan error, 1)
	go func() {
		_, err := s.ReadBatch(bufs, sizes, 0)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	// EOF of the input is io.EOF.
	s2 := NewStream(bytes.NewReader(nil), io.Discard, nil)
	if _, err := s2.ReadBatch(bufs, sizes, 0); err != io.EOF {
		t.Fatalf("eof: %v", err)
	}
}

func FuzzDeframer(f *testing.F) {
	f.Add(encode(frames(60, 14)))
	f.Add([]byte{0, 0, 0, 1, 9})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDeframer(bytes.NewReader(in), 2000)
		var got [][]byte
		for {
			fr, err := d.Next()
			if err != nil {
				break
			}
			if len(fr) > 2000 || len(fr) == 0 {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			got = append(got, append([]byte(nil), fr...))
		}
		again := readAll(t, bytes.NewReader(encode(got)))
		if len(again) != len(got) {
			t.Fatal("re-encoding changed the frames")
		}
		for i := range got {
			if !bytes.Equal(again[i], got[i]) {
				t.Fatal("re-encoding changed a frame")
			}
		}
	})
}
