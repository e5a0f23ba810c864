package stream

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"cab/transport"
)

// Client is a transport.Conn over one stream that it dials itself: when
// there is something to send and no stream, and again, with backoff, when
// the stream breaks. Its one remote end is Remote(); packets from the
// stream come from it, and packets to any other Addr are lost.
type Client struct {
	base
	addr  Addr
	dial  func(ctx context.Context) (io.ReadWriteCloser, error)
	queue chan packet // outlives streams: a packet may wait for the next one
	want  chan struct{}
	cur   atomic.Pointer[stream]
	ctx   context.Context
	stop  context.CancelFunc

	lastErr transport.LastError
}

var (
	_ transport.Conn         = (*Client)(nil)
	_ transport.Schemer      = (*Client)(nil)
	_ transport.PathMTUer    = (*Client)(nil)
	_ transport.DropCounter  = (*Client)(nil)
	_ transport.ReachChecker = (*Client)(nil)
)

// Dial returns a Client that reaches remote (shown in logs as
// scheme://remote) through dial.
func Dial(scheme, remote string, dial func(ctx context.Context) (io.ReadWriteCloser, error)) *Client {
	c := &Client{base: newBase(scheme), addr: Addr{scheme: scheme, remote: remote}, dial: dial,
		queue: make(chan packet, queuePackets), want: make(chan struct{}, 1)}
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.dialLoop()
	return c
}

// DialTCP returns a Client of the TCP server at addr ("host:port").
func DialTCP(addr string) *Client {
	return Dial("tcp", addr, func(ctx context.Context) (io.ReadWriteCloser, error) {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tuneTCP(c.(*net.TCPConn))
		return c, nil
	})
}

// DialUnix returns a Client of the unix stream socket at path.
func DialUnix(path string) *Client {
	return Dial("unix", path, func(ctx context.Context) (io.ReadWriteCloser, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	})
}

// DialCommand returns a Client that runs name with args (ssh, say) and
// speaks the stream over its stdin and stdout. The child is killed when the
// stream closes, and started again when there is something to send. The
// end of its stderr is kept for LastError.
func DialCommand(scheme, remote, name string, args ...string) *Client {
	return Dial(scheme, remote, func(ctx context.Context) (io.ReadWriteCloser, error) {
		return startCommand(name, args...)
	})
}

// startCommand starts name with args, its stdin and stdout pipes grown so
// that a batch of frames goes in one write.
func startCommand(name string, args ...string) (*cmdStream, error) {
	cmd := exec.Command(name, args...)
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	growPipe(inW)
	growPipe(outR)
	cmd.Stdin, cmd.Stdout = inR, outW
	cs := &cmdStream{cmd: cmd, in: inW, out: outR}
	cmd.Stderr = &cs.stderr
	err = cmd.Start()
	inR.Close() // the child's ends
	outW.Close()
	if err == nil {
		cs.pw, err = newPipeWriter(inW)
	}
	if err != nil {
		inW.Close()
		outR.Close()
		if cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		return nil, err
	}
	return cs, nil
}

// cmdStream is a child process as a stream.
type cmdStream struct {
	cmd    *exec.Cmd
	in     *os.File // the child's stdin
	out    *os.File // the child's stdout
	pw     *pipeWriter
	stderr tail
	once   sync.Once
}

func (s *cmdStream) Read(p []byte) (int, error)  { return s.out.Read(p) }
func (s *cmdStream) Write(p []byte) (int, error) { return s.in.Write(p) }

// WriteBuffers writes a batch of frames with one system call.
func (s *cmdStream) WriteBuffers(bufs [][]byte) error { return s.pw.WriteBuffers(bufs) }

func (s *cmdStream) Close() error {
	s.once.Do(func() {
		s.in.Close()
		s.out.Close()
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	return nil
}

// exitError describes how the child ended, with the end of its stderr.
func (s *cmdStream) exitError() error {
	msg := s.stderr.String()
	if msg == "" {
		return fmt.Errorf("%s exited", s.cmd.Path)
	}
	return fmt.Errorf("%s exited: %s", s.cmd.Path, msg)
}

// tail keeps the last 1 KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 1024 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-1024:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}

// Remote is the Addr of the far end: where to send, and where packets
// come from.
func (c *Client) Remote() Addr { return c.addr }

// Connected reports whether a stream is open.
func (c *Client) Connected() bool { return c.cur.Load() != nil }

// LastError returns why the last dial failed or the last stream ended, or
// nil.
func (c *Client) LastError() error { return c.lastErr.Get() }

func (c *Client) setErr(err error) { c.lastErr.Set(err) }

// CheckReach implements transport.ReachChecker: why the last dial failed
// or the last connection ended, or nil.
func (c *Client) CheckReach(transport.Addr) error { return c.LastError() }

func (c *Client) dialLoop() {
	defer c.wg.Done()
	var pace transport.Redial
	for {
		select {
		case <-c.want:
		case <-c.closed:
			return
		}
		if !pace.Wait(c.closed) {
			return
		}
		dctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
		rw, err := c.dial(dctx)
		cancel()
		if err != nil {
			c.setErr(err)
			pace.Failed()
			c.wake()
			continue
		}
		st := newStream(c.addr, rw)
		st.queue = c.queue
		gone := make(chan struct{})
		began := time.Now()
		c.cur.Store(st)
		c.run(st, func() { close(gone) })
		<-gone
		c.cur.Store(nil)
		if cs, ok := rw.(*cmdStream); ok {
			c.setErr(cs.exitError())
		} else {
			c.setErr(fmt.Errorf("%s: stream closed", c.addr))
		}
		pace.Ended(began)
		if len(c.queue) > 0 {
			c.wake()
		}
	}
}

// wake asks the dial loop for a stream.
func (c *Client) wake() { transport.Wake(c.want) }

// WriteBatch implements transport.Conn: packets to Remote() are queued for
// the stream, which is dialled when there is none. A full queue loses them.
func (c *Client) WriteBatch(ps []transport.Packet) error {
	if c.isClosed() {
		return fmt.Errorf("%s write: %w", c.scheme, net.ErrClosed)
	}
	var err error
	now := time.Now().UnixNano()
	for _, p := range ps {
		if len(p.B) > MaxPacket || len(p.B) == 0 {
			if err == nil && len(p.B) > MaxPacket {
				err = tooBig(len(p.B))
			}
			continue
		}
		if a, ok := p.Addr.(Addr); !ok || a != c.addr {
			c.drops.Add(1)
			continue
		}
		c.enqueue(c.queue, p.B, now)
	}
	if c.cur.Load() == nil {
		c.wake()
	}
	return err
}

// Close ends the stream (killing a child) and the dial loop.
func (c *Client) Close() error {
	return c.closeBase(func() {
		c.stop()
		if st := c.cur.Load(); st != nil {
			st.close()
		}
	})
}
