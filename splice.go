package cab

import (
	"context"
	"errors"
	"io"
	"net"

	"cab/bridgeif"
)

// Splice copies frames between two ports until ctx is done or either port
// ends, then closes both. The end of a stream is a clean end (nil).
func Splice(ctx context.Context, a, b bridgeif.Port) error {
	errc := make(chan error, 2)
	pump := func(from, to bridgeif.Port) {
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, bridgeif.MaxFrame+64)
		}
		sizes := make([]int, batch)
		out := make([][]byte, 0, batch)
		for {
			n, err := from.ReadBatch(bufs, sizes, 0)
			if err != nil {
				errc <- err
				return
			}
			out = out[:0]
			for i := 0; i < n; i++ {
				out = append(out, bufs[i][:sizes[i]])
			}
			if _, err := to.WriteBatch(out, 0); err != nil {
				errc <- err
				return
			}
		}
	}
	go pump(a, b)
	go pump(b, a)
	var err error
	pending := 2
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	a.Close()
	b.Close()
	for ; pending > 0; pending-- {
		<-errc
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
