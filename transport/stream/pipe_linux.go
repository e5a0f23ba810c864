package stream

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Verified: run on Linux; TestCommandStreamWritev counts the writes a
// batch takes through a real pipe.

// pipeSize is what a command's pipes are grown to (F_SETPIPE_SZ; the
// kernel's default limit for unprivileged processes, /proc/sys/fs/
// pipe-max-size, is 1 MiB): a batch of frames fits in one write.
const pipeSize = 1 << 20

// growPipe grows the pipe of f to pipeSize, if the kernel lets it.
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}

// pipeWriter writes a batch of frames into a pipe with writev(2): one
// system call for the batch where net.Buffers writes a file one buffer at
// a time. It allocates nothing once its iovecs have grown.
type pipeWriter struct {
	rc   syscall.RawConn
	iov  []unix.Iovec
	bufs [][]byte // what is left to write
	err  error
	fn   func(fd uintptr) bool
	n    int // writev calls, for tests
}

func newPipeWriter(f *os.File) (*pipeWriter, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &pipeWriter{rc: rc}
	w.fn = w.writev
	return w, nil
}

// WriteBuffers writes every byte of bufs, in order; it changes bufs.
func (w *pipeWriter) WriteBuffers(bufs [][]byte) error {
	w.bufs, w.err = bufs, nil
	for len(w.bufs) > 0 && w.err == nil {
		if err := w.rc.Write(w.fn); err != nil {
			return err
		}
	}
	w.bufs = nil
	return w.err
}

// maxIov bounds the iovecs of one writev (the kernel's IOV_MAX is 1024).
const maxIov = 1024

// writev is one writev of what is left, for the poller: false to wait
// until the pipe has room.
func (w *pipeWriter) writev(fd uintptr) bool {
	w.iov = w.iov[:0]
	for _, b := range w.bufs {
		if len(w.iov) == maxIov {
			break
		}
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			w.iov = append(w.iov, v)
		}
	}
	if len(w.iov) == 0 {
		w.bufs = nil
		return true
	}
	for {
		w.n++
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.err = e
			return true
		}
		w.advance(int(n))
		clear(w.iov) // keep no reference to the frames
		return true
	}
}

// advance drops the first n bytes of w.bufs.
func (w *pipeWriter) advance(n int) {
	for n > 0 && len(w.bufs) > 0 {
		if l := len(w.bufs[0]); l <= n {
			n -= l
			w.bufs = w.bufs[1:]
		} else {
			w.bufs[0] = w.bufs[0][n:]
			n = 0
		}
	}
	for len(w.bufs) > 0 && len(w.bufs[0]) == 0 {
		w.bufs = w.bufs[1:]
	}
}
