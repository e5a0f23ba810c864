package dnstun

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"cab/transport"
)

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "resolver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// roundTrip carries a packet each way between a Client dialled with
// resolver and the Server behind it.
func roundTrip(t *testing.T, s *Server, resolver string) {
	t.Helper()
	c, err := Dial("t.example.com", resolver, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := bytes.Repeat([]byte("u"), 1546)
	// Written again every second, as the cable retries a handshake: a
	// packet waiting for the session to open has a deadline.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < 15; i++ {
			c.WriteBatch([]transport.Packet{{B: up, Addr: c.Remote()}})
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	p := readOne(t, s, 15*time.Second)
	if !bytes.Equal(p.B, up) {
		t.Fatalf("server got %d bytes", len(p.B))
	}
	down := bytes.Repeat([]byte("d"), 1546)
	s.WriteBatch([]transport.Packet{{B: down, Addr: p.Addr}})
	if p := readOne(t, c, 10*time.Second); !bytes.Equal(p.B, down) {
		t.Fatalf("client got %d bytes", len(p.B))
	}
}

// TestDoT: the client reaches the server through a DNS-over-TLS resolver
// (here a TLS front for the server's own handler), pipelining its queries.
func TestDoT(t *testing.T) {
	cert, pool := selfSigned(t)
	resolverRoots = pool
	defer func() { resolverRoots = nil }()
	s, err := Listen("127.0.0.1:0", "t.example.com", discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var queries atomic.Int64
	front := &dns.Server{Listener: l, Net: "tcp-tls", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		queries.Add(1)
		w.WriteMsg(s.core.handle(r, time.Now()))
	})}
	go front.ActivateAndServe()
	defer front.Shutdown()
	roundTrip(t, s, "tls://"+l.Addr().String())
	if queries.Load() == 0 {
		t.Fatal("no query over TLS")
	}
	// An untrusted certificate: nothing gets through.
	resolverRoots = x509.NewCertPool()
	c, _ := Dial("t.example.com", "tls://"+l.Addr().String(), discard)
	defer c.Close()
	time.Sleep(500 * time.Millisecond) // the first client's last queries
	n := queries.Load()
	c.WriteBatch([]transport.Packet{{B: []byte("x"), Addr: c.Remote()}})
	time.Sleep(time.Second)
	if queries.Load() != n {
		t.Error("queries crossed to a resolver with an untrusted certificate")
	}
}

// TestDoH: the same through a DNS-over-HTTPS resolver over HTTP/2, which
// first answers 429 (rate limited) to 3 queries.
func TestDoH(t *testing.T) {
	cert, pool := selfSigned(t)
	resolverRoots = pool
	defer func() { resolverRoots = nil }()
	s, err := Listen("127.0.0.1:0", "t.example.com", discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var h2, limited atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limited.Add(1) <= 3 { // a rate limit at first: those queries are lost
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/dns-message" {
			http.Error(w, "want a POST of application/dns-message", http.StatusBadRequest)
			return
		}
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		b, _ := io.ReadAll(r.Body)
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			http.Error(w, "bad message", http.StatusBadRequest)
			return
		}
		out, _ := s.core.handle(req, time.Now()).Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(out)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	t0 := time.Now()
	roundTrip(t, s, srv.URL+"/dns-query")
	if d := time.Since(t0); d < time.Second {
		t.Errorf("crossed in %v despite 429s with Retry-After: 1", d)
	}
	if h2.Load() == 0 {
		t.Error("no query over HTTP/2")
	}
}
