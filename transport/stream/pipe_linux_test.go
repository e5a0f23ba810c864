package stream

import (
	"bytes"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCommandStreamWritev: a batch of frames goes into a command's pipe
// with one writev; a batch larger than the pipe is written whole across
// partial writes; the child (cat) gives back every byte in order; the
// pipes were grown.
func TestCommandStreamWritev(t *testing.T) {
	cs, err := startCommand("cat")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	got := make(chan []byte, 1)
	var want bytes.Buffer
	small := make([][]byte, 200)
	for i := range small {
		small[i] = bytes.Repeat([]byte{byte(i)}, 100+i)
		want.Write(small[i])
	}
	big := make([][]byte, 3000) // 3000 × 1400 bytes: more than the pipe holds
	for i := range big {
		big[i] = bytes.Repeat([]byte{byte(i * 7)}, 1400)
		want.Write(big[i])
	}
	total := want.Len()
	go func() {
		b := make([]byte, total)
		_, err := io.ReadFull(cs, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	if err := cs.WriteBuffers(small); err != nil {
		t.Fatal(err)
	}
	if cs.pw.n != 1 {
		t.Errorf("200 frames took %d writes, want 1", cs.pw.n)
	}
	if err := cs.WriteBuffers(big); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("cat gave back %d bytes that differ from the %d written", len(b), total)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cat did not give back what was written")
	}
	if n := pipeLen(t, cs); n < pipeSize {
		t.Errorf("the pipe holds %d bytes, want %d", n, pipeSize)
	}
}

func pipeLen(t *testing.T, cs *cmdStream) int {
	t.Helper()
	rc, err := cs.in.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) { n, _ = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) })
	return n
}
