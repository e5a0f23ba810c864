package dnstun

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DNS over TLS (RFC 7858: queries pipelined on one TLS stream, each with a
// 2-byte length, answers matched by ID) and DNS over HTTPS (RFC 8484: one
// POST of application/dns-message per query, many at once over HTTP/2) to
// the resolver. Either hides the tunnel only as far as the resolver; cab's
// own encryption is what protects the frames. Queries wait in a short
// queue; when it is full, or the resolver cannot be reached, a query is
// lost, which the window counts like any other loss.
const (
	secureQueue    = 256
	dohWorkers     = 32
	secureTimeout  = 10 * time.Second
	redialMin      = 500 * time.Millisecond
	redialMax      = 10 * time.Second
	maxDoHResponse = 65535
)

// resolverRoots are the CAs a DoT or DoH resolver's certificate must
// chain to; nil: the system's (SSL_CERT_FILE and SSL_CERT_DIR apply).
var resolverRoots *x509.CertPool

type secureSender struct {
	addr   string // tls://HOST:PORT or https://URL
	log    *slog.Logger
	answer func([]byte)
	out    chan []byte
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conn   net.Conn // the current DoT stream
	logged time.Time
	pause  time.Time // DoH: no query before this (a 429's Retry-After)
}

func newSecureSender(addr string, log *slog.Logger, answer func([]byte)) *secureSender {
	s := &secureSender{addr: addr, log: log, answer: answer, out: make(chan []byte, secureQueue)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	return s
}

func (s *secureSender) start() {
	if strings.HasPrefix(s.addr, "tls://") {
		s.wg.Add(1)
		go s.dotLoop()
		return
	}
	client := &http.Client{Timeout: secureTimeout, Transport: &http.Transport{
		ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: resolverRoots},
		MaxIdleConnsPerHost: dohWorkers, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: secureTimeout,
	}}
	for i := 0; i < dohWorkers; i++ {
		s.wg.Add(1)
		go s.dohWorker(client)
	}
}

// send queues one query; a full queue loses it.
func (s *secureSender) send(b []byte) error {
	select {
	case s.out <- append([]byte(nil), b...):
	default:
	}
	return nil
}

func (s *secureSender) close() {
	s.stop()
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// warn logs a resolver error, at most once every 10 s.
func (s *secureSender) warn(msg string, err error) {
	s.mu.Lock()
	now := time.Now()
	ok := now.Sub(s.logged) >= 10*time.Second
	if ok {
		s.logged = now
	}
	s.mu.Unlock()
	if ok {
		s.log.Warn(msg, "resolver", s.addr, "err", err)
	}
}

// dotLoop keeps one TLS stream to the resolver while there are queries,
// redialling with backoff when it breaks.
func (s *secureSender) dotLoop() {
	defer s.wg.Done()
	hp := strings.TrimPrefix(s.addr, "tls://")
	host, _, _ := net.SplitHostPort(hp)
	backoff := redialMin
	for {
		var first []byte
		select {
		case <-s.ctx.Done():
			return
		case first = <-s.out:
		}
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: secureTimeout}, Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: resolverRoots}}
		conn, err := d.DialContext(s.ctx, "tcp", hp)
		if err != nil {
			s.warn("dns over tls: cannot reach the resolver", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, redialMax)
			continue
		}
		backoff = redialMin
		s.mu.Lock()
		s.conn = conn
		s.mu.Unlock()
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			r := bufio.NewReader(conn)
			var hdr [2]byte
			for {
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					return
				}
				b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
				if _, err := io.ReadFull(r, b); err != nil {
					return
				}
				s.answer(b)
			}
		}()
		err = s.dotWrite(conn, first, readDone)
		conn.Close()
		<-readDone
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		if err != nil && s.ctx.Err() == nil {
			s.warn("dns over tls: the stream to the resolver broke; redialling", err)
		}
	}
}

// dotWrite writes queries to conn until it fails or the reader ends,
// coalescing what is queued into one write.
func (s *secureSender) dotWrite(conn net.Conn, first []byte, readDone chan struct{}) error {
	var buf []byte
	b := first
	for {
		buf = buf[:0]
		for b != nil {
			buf = binary.BigEndian.AppendUint16(buf, uint16(len(b)))
			buf = append(buf, b...)
			b = nil
			select {
			case b = <-s.out:
			default:
			}
		}
		conn.SetWriteDeadline(time.Now().Add(secureTimeout))
		if _, err := conn.Write(buf); err != nil {
			return err
		}
		select {
		case <-s.ctx.Done():
			return nil
		case <-readDone:
			return errors.New("the resolver closed the stream")
		case b = <-s.out:
		}
	}
}

// dohWorker posts queries one at a time; dohWorkers of them run at once
// over the HTTP/2 connection.
func (s *secureSender) dohWorker(client *http.Client) {
	defer s.wg.Done()
	for {
		var b []byte
		select {
		case <-s.ctx.Done():
			return
		case b = <-s.out:
		}
		s.mu.Lock()
		wait := time.Until(s.pause)
		s.mu.Unlock()
		if wait > 0 {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.addr, bytes.NewReader(b))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", "application/dns-message")
		req.Header.Set("Accept", "application/dns-message")
		resp, err := client.Do(req)
		if err != nil {
			if s.ctx.Err() == nil {
				s.warn("dns over https: query failed", err)
			}
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxDoHResponse))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			// 429 and 5xx: the query is lost, and the window backs off;
			// a 429 also stops every query for its Retry-After (1 s by
			// default, at most 10 s).
			if resp.StatusCode == http.StatusTooManyRequests {
				d := time.Second
				if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
					d = min(time.Duration(n)*time.Second, redialMax)
				}
				s.mu.Lock()
				s.pause = time.Now().Add(d)
				s.mu.Unlock()
			}
			s.warn("dns over https: the resolver answered "+resp.Status, nil)
			continue
		}
		if err == nil {
			s.answer(body)
		}
	}
}
