package quic

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"time"
)

// selfSigned makes a TLS certificate for a server that has none
// configured: a fresh P-256 key, valid for a year, named after the host.
// It proves nothing (cab's handshake authenticates the peers); it only
// lets the QUIC handshake happen.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// serverTLS is the TLS configuration of a server: the certificate at
// certFile and keyFile (PEM), or a self-signed one when both are empty.
func serverTLS(certFile, keyFile, alpn string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	switch {
	case certFile == "" && keyFile == "":
		cert, err = selfSigned()
	case certFile == "" || keyFile == "":
		return nil, fmt.Errorf("quic: a certificate needs both its file and its key file")
	default:
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("quic: tls certificate: %w", err)
	}
	return &tls.Config{
		Certificates:           []tls.Certificate{cert},
		NextProtos:             []string{alpn},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true, // no resumption, so no 0-RTT
	}, nil
}

// clientTLS is the TLS configuration of a client. The server's
// certificate is not checked: cab's own handshake inside authenticates
// the server by its cab key, whatever certificate it shows.
func clientTLS(serverName, alpn string) *tls.Config {
	return &tls.Config{
		ServerName:         serverName,
		NextProtos:         []string{alpn},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
	}
}
