package bridgeiftest

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"testing/synctest"
)

func TestPortOffsetsAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPort(4)
		p.Inject([]byte("frame-one-xxxx"))
		p.Inject(bytes.Repeat([]byte{1}, 100)) // too long for the buffers below
		p.Inject([]byte("frame-two-yyyy"))
		bufs := [][]byte{make([]byte, 40), make([]byte, 40), make([]byte, 40)}
		sizes := make([]int, 3)
		n, err := p.ReadBatch(bufs, sizes, 16)
		if err != nil || n != 2 {
			t.Fatalf("n=%d err=%v", n, err)
		}
		if string(bufs[0][16:16+sizes[0]]) != "frame-one-xxxx" || string(bufs[1][16:16+sizes[1]]) != "frame-two-yyyy" {
			t.Fatal("frames misplaced")
		}
		if p.Dropped() != 1 {
			t.Fatalf("dropped %d", p.Dropped())
		}
		if _, err := p.WriteBatch([][]byte{append(make([]byte, 16), "out"...)}, 16); err != nil {
			t.Fatal(err)
		}
		if got := <-p.Frames(); string(got) != "out" {
			t.Fatalf("written %q", got)
		}
		errc := make(chan error)
		go func() {
			_, err := p.ReadBatch(bufs, sizes, 0)
			errc <- err
		}()
		synctest.Wait()
		p.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if err := p.Inject([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("inject after close: %v", err)
		}
	})
}

func TestPair(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(8)
		a.WriteBatch([][]byte{[]byte("hello")}, 0)
		buf := [][]byte{make([]byte, 10)}
		sizes := []int{0}
		if n, err := b.ReadBatch(buf, sizes, 0); n != 1 || err != nil || string(buf[0][:sizes[0]]) != "hello" {
			t.Fatalf("n=%d err=%v", n, err)
		}
		a.Close()
		b.Close()
	})
}
