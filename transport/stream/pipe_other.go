//go:build !linux

package stream

import (
	"net"
	"os"
)

// Verified: compiled for freebsd, darwin and windows by make cross; not
// run. Elsewhere a batch goes to the pipe one buffer at a time.

func growPipe(*os.File) {}

type pipeWriter struct{ f *os.File }

func newPipeWriter(f *os.File) (*pipeWriter, error) { return &pipeWriter{f}, nil }

func (w *pipeWriter) WriteBuffers(bufs [][]byte) error {
	b := net.Buffers(bufs)
	_, err := b.WriteTo(w.f)
	return err
}
