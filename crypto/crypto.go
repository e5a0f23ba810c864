// Package crypto holds cab's cryptography: X25519 keys, the Noise IKpsk2
// handshake (github.com/flynn/noise), data sessions that seal and open
// packets in place with AES-256-GCM or ChaCha20-Poly1305 behind an RFC 6479
// replay window (package replay). Nothing here is invented: the primitives come from the Go
// standard library, golang.org/x/crypto and flynn/noise.
package crypto

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

// Sizes.
const (
	KeyLen = 32
	// HeaderLen is the data packet header: type (1) | reserved (3, zero) |
	// receiver index (4, little endian) | counter (8, little endian).
	HeaderLen = 16
	// TagLen is the AEAD tag that follows the ciphertext.
	TagLen = 16
	// Overhead is what sealing adds to a frame.
	Overhead = HeaderLen + TagLen
)

// Packet types: the first byte of every cab packet.
const (
	TypeInit     byte = 1 // handshake initiation
	TypeResponse byte = 2 // handshake response
	TypeCookie   byte = 3 // cookie reply: a responder under load asks for mac2
	TypeData     byte = 4 // data; an empty payload is a keepalive
	TypeFragment byte = 5 // data carrying a fragment of a frame too big for the path
	TypeProbe    byte = 6 // a padded path-MTU probe, or the answer to one
	TypeControl  byte = 7 // a sealed control message (segment joins)
)

// Protocol timers and limits, WireGuard's values.
const (
	RekeyAfterMessages  uint64 = 1 << 60
	RejectAfterMessages uint64 = 1<<64 - 1<<13 - 1
	RekeyAfterTime             = 120 * time.Second
	RejectAfterTime            = 180 * time.Second
	RekeyTimeout               = 5 * time.Second
	KeepaliveTimeout           = 10 * time.Second
)

// A PrivateKey is an X25519 private key.
type PrivateKey [KeyLen]byte

// A PublicKey is an X25519 public key; it identifies a peer.
type PublicKey [KeyLen]byte

// A Secret is a pre-shared key.
type Secret [KeyLen]byte

// GenerateKey returns a new random private key.
func GenerateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate key: %w", err)
	}
	clamp(&k)
	return k, nil
}

func clamp(k *PrivateKey) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// x25519 is curve25519.X25519, a variable so that a test can count the
// scalar multiplications.
var x25519 = curve25519.X25519

// Public returns the public key of k.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	pub, err := x25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic("crypto: X25519 of the base point failed: " + err.Error())
	}
	copy(p[:], pub)
	return p
}

// fieldPrime is 2^255 - 19, little endian.
var fieldPrime = func() (p PublicKey) {
	for i := range p {
		p[i] = 0xff
	}
	p[0], p[31] = 0xed, 0x7f
	return p
}()

// Canonical reports whether k is the one encoding of its curve point: a
// u-coordinate below 2^255 - 19, so bit 255 is clear. X25519 ignores bit
// 255 and reduces larger values, so a non-canonical key names the same
// point as a canonical one and would make a second peer of the same
// site. Keys made by Public are always canonical.
func (k PublicKey) Canonical() bool {
	for i := KeyLen - 1; i >= 0; i-- {
		if k[i] != fieldPrime[i] {
			return k[i] < fieldPrime[i]
		}
	}
	return false // equal to the prime
}

// ErrNonCanonical is the error of a public key that is not canonical.
var ErrNonCanonical = errors.New("public key is not canonical (bit 255 set, or not reduced modulo 2^255-19): no cab makes such a key; copy the key again from cab pubkey")

// ParsePublicKey parses a base64 public key (as ParseKey) and refuses one
// that is not canonical.
func ParsePublicKey(s string) (PublicKey, error) {
	b, err := ParseKey(s)
	if err != nil {
		return PublicKey{}, err
	}
	k := PublicKey(b)
	if !k.Canonical() {
		return PublicKey{}, ErrNonCanonical
	}
	return k, nil
}

// String returns k in standard base64.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns the first 8 characters of k's base64 form, for logs and
// default names.
func (k PublicKey) Short() string { return k.String()[:8] }

// ParseKey parses a base64 (standard encoding) 32-byte key; white space
// around it is ignored.
func ParseKey(s string) ([KeyLen]byte, error) {
	var k [KeyLen]byte
	s = strings.TrimSpace(s)
	if s == "" {
		return k, errors.New("empty key")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, errors.New("key is not base64")
	}
	if len(b) != KeyLen {
		return k, fmt.Errorf("key has %d bytes, want %d", len(b), KeyLen)
	}
	copy(k[:], b)
	return k, nil
}

// LoadKeyFile reads a key written by WriteKeyFile or `cab genkey`. It
// refuses a file that group or others may read or write (on Windows, which
// has no mode bits, see checkPrivate).
func LoadKeyFile(path string) ([KeyLen]byte, error) {
	var k [KeyLen]byte
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return k, fmt.Errorf("key file %s does not exist: make one with cab genkey -o %s (%w)", path, path, os.ErrNotExist)
	}
	if err != nil {
		return k, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return k, fmt.Errorf("key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return k, fmt.Errorf("key file %s: not a regular file", path)
	}
	if err := checkPrivate(path, st); err != nil {
		return k, err
	}
	b := make([]byte, 1024)
	n, err := f.Read(b)
	if err != nil {
		return k, fmt.Errorf("key file %s: %w", path, err)
	}
	k, err = ParseKey(string(b[:n]))
	if err != nil {
		return k, fmt.Errorf("key file %s: %w (make one with cab genkey)", path, err)
	}
	return k, nil
}

// CreateKeyFile writes k to path in base64 in a new file, created with
// mode 0600 (O_EXCL: an existing file, or a link in its place, is an
// error that says so, and is left as it is).
func CreateKeyFile(path string, k [KeyLen]byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("key file %s already exists: cab never overwrites a key; remove it first if you mean to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if err := f.Chmod(0o600); err != nil { // whatever the umask left
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(k[:]) + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create key file: %w", err)
	}
	return f.Close()
}

// WriteKeyFile writes k to path in base64, mode 0600.
func WriteKeyFile(path string, k [KeyLen]byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(k[:]) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	return f.Close()
}

// PSKStatic derives a static private key from a pre-shared key. In PSK-only
// mode the server uses it, so a client that holds only the PSK knows the
// server's public key.
func PSKStatic(psk Secret) PrivateKey {
	var k PrivateKey
	r := hkdf.New(blake2sHash, psk[:], nil, []byte("cab psk static key v1"))
	if _, err := r.Read(k[:]); err != nil {
		panic("crypto: hkdf: " + err.Error())
	}
	clamp(&k)
	return k
}

// ParseHeader reads the type and receiver index of a packet without
// trusting anything else. For an initiation the receiver is 0. ok is false
// for a packet shorter than its type's minimum or of an unknown type.
func ParseHeader(pkt []byte) (typ byte, receiver uint32, ok bool) {
	if len(pkt) < 1 {
		return 0, 0, false
	}
	typ = pkt[0]
	switch typ {
	case TypeData, TypeFragment, TypeProbe, TypeControl:
		if len(pkt) < HeaderLen+TagLen {
			return typ, 0, false
		}
		return typ, le32(pkt[4:8]), true
	case TypeInit:
		return typ, 0, len(pkt) >= initMinLen
	case TypeResponse:
		if len(pkt) < responseMinLen {
			return typ, 0, false
		}
		return typ, le32(pkt[8:12]), true
	case TypeCookie:
		if len(pkt) != CookieReplyLen {
			return typ, 0, false
		}
		return typ, le32(pkt[4:8]), true
	}
	return typ, 0, false
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func blake2sHash() hashT {
	h, _ := blake2s.New256(nil)
	return h
}
