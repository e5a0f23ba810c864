package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"cab/crypto/replay"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Errors of Open and Seal. The cable drops and counts the packet; none of
// them is ever reported to the sender.
var (
	ErrShort     = errors.New("crypto: packet too short")
	ErrAuth      = errors.New("crypto: packet failed authentication")
	ErrReplay    = errors.New("crypto: packet replayed or too old")
	ErrExhausted = errors.New("crypto: session has sealed its last message")
)

// A Cipher is a data AEAD.
type Cipher uint8

// The data ciphers.
const (
	CipherAES256GCM        Cipher = 1
	CipherChaCha20Poly1305 Cipher = 2
)

func (c Cipher) String() string {
	switch c {
	case CipherAES256GCM:
		return "aes-256-gcm"
	case CipherChaCha20Poly1305:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

// LocalCiphers returns the ciphers this machine supports, fastest first:
// AES-256-GCM first only where the CPU has AES and carry-less multiply
// instructions.
func LocalCiphers() []Cipher {
	if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL {
		return []Cipher{CipherAES256GCM, CipherChaCha20Poly1305}
	}
	return []Cipher{CipherChaCha20Poly1305, CipherAES256GCM}
}

func newAEAD(c Cipher, key [32]byte) (cipher.AEAD, error) {
	switch c {
	case CipherAES256GCM:
		b, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case CipherChaCha20Poly1305:
		return chacha20poly1305.New(key[:])
	}
	return nil, fmt.Errorf("crypto: unknown cipher %d", c)
}

// A Session holds the keys of one completed handshake with one peer. Seal
// and Open are safe for concurrent use and do not allocate.
type Session struct {
	send, recv cipher.AEAD
	local      uint32
	remote     uint32
	cipher     Cipher
	created    time.Time
	initiator  bool
	binding    []byte // the handshake hash, which no other session shares

	sent atomic.Uint64 // next send counter

	mu     sync.Mutex // guards replay
	replay replay.Window
}

func newSession(c Cipher, sendKey, recvKey [32]byte, local, remote uint32, initiator bool, binding []byte) (*Session, error) {
	send, err := newAEAD(c, sendKey)
	if err != nil {
		return nil, err
	}
	recv, err := newAEAD(c, recvKey)
	if err != nil {
		return nil, err
	}
	return &Session{send: send, recv: recv, local: local, remote: remote, cipher: c,
		created: time.Now(), initiator: initiator, binding: binding}, nil
}

// LocalIndex is the index peers put in the headers of packets to us.
func (s *Session) LocalIndex() uint32 { return s.local }

// RemoteIndex is the index we put in the headers of packets to the peer.
func (s *Session) RemoteIndex() uint32 { return s.remote }

// Cipher is the session's data cipher.
func (s *Session) Cipher() Cipher { return s.cipher }

// Created is when the session's handshake completed (time.Now at the time).
func (s *Session) Created() time.Time { return s.created }

// Binding is the session's channel binding: the Noise handshake hash,
// equal on both sides and different for every session. A proof made over
// it (SegmentProof) cannot be replayed into another session.
func (s *Session) Binding() []byte { return s.binding }

// IsInitiator reports whether this side sent the initiation.
func (s *Session) IsInitiator() bool { return s.initiator }

// Sent returns how many messages have been sealed.
func (s *Session) Sent() uint64 { return s.sent.Load() }

// noncePool holds nonce buffers. A nonce on the stack would escape to the
// heap through the cipher.AEAD interface call and cost an allocation per
// packet; pooled pointers cost none, and each caller has its own buffer, so
// Seal and Open stay safe for concurrent use.
var noncePool = sync.Pool{New: func() any { return new([12]byte) }}

// getNonce returns a pooled nonce for counter: 4 zero bytes, then the
// counter in little endian. Put it back with noncePool.Put.
func getNonce(counter uint64) *[12]byte {
	n := noncePool.Get().(*[12]byte)
	n[0], n[1], n[2], n[3] = 0, 0, 0, 0
	binary.LittleEndian.PutUint64(n[4:], counter)
	return n
}

// Seal encrypts the frame at buf[HeaderLen:HeaderLen+n] in place, writes
// the header in front of it and returns the packet, buf[:HeaderLen+n+TagLen].
// len(buf) must be at least HeaderLen+n+TagLen.
func (s *Session) Seal(buf []byte, n int) ([]byte, error) {
	return s.SealType(TypeData, buf, n)
}

// SealType is Seal for a packet of type typ: TypeData, TypeFragment or
// TypeProbe.
func (s *Session) SealType(typ byte, buf []byte, n int) ([]byte, error) {
	return s.SealFlags(typ, 0, buf, n)
}

// FlagHeard, in the flags byte of a data packet's header, says that its
// sender has heard from the receiver in the last few seconds: the
// receiver's packets get through. The header is authenticated, so the flag
// cannot be forged on the path.
const FlagHeard = 0x01

// FlagAsk, in the flags byte of a keepalive, asks the receiver to answer at
// once rather than after its passive-keepalive delay: the sender watches
// for a dead peer on a short timer. An answer never carries FlagAsk.
const FlagAsk = 0x02

// FlagSegment, in the flags byte of a data or fragment packet, says that
// the plaintext ends with a segment id (4 bytes, big endian): the frame
// belongs to that segment rather than the default one. The id itself is
// sealed, so the underlay does not show which segment a packet is of.
const FlagSegment = 0x08

// Flags returns the flags byte of a packet that Open has authenticated.
func Flags(pkt []byte) byte { return pkt[1] }

// SealFlags is SealType with flags in the header's first reserved byte.
func (s *Session) SealFlags(typ, flags byte, buf []byte, n int) ([]byte, error) {
	if n < 0 || len(buf) < HeaderLen+n+TagLen {
		return nil, ErrShort
	}
	ctr := s.sent.Add(1) - 1
	if ctr >= RejectAfterMessages {
		s.sent.Store(RejectAfterMessages)
		return nil, ErrExhausted
	}
	hdr := buf[:HeaderLen]
	hdr[0], hdr[1], hdr[2], hdr[3] = typ, flags, 0, 0
	putLE32(hdr[4:8], s.remote)
	binary.LittleEndian.PutUint64(hdr[8:16], ctr)
	nc := getNonce(ctr)
	s.send.Seal(buf[HeaderLen:HeaderLen], nc[:], buf[HeaderLen:HeaderLen+n], hdr)
	noncePool.Put(nc)
	return buf[:HeaderLen+n+TagLen], nil
}

// Open authenticates and decrypts pkt in place, checks and updates the
// replay window, and returns the frame, which aliases pkt. An empty frame is
// a keepalive.
func (s *Session) Open(pkt []byte) ([]byte, error) {
	if len(pkt) < HeaderLen+TagLen {
		return nil, ErrShort
	}
	ctr := binary.LittleEndian.Uint64(pkt[8:16])
	if ctr >= RejectAfterMessages {
		return nil, ErrReplay
	}
	nc := getNonce(ctr)
	frame, err := s.recv.Open(pkt[HeaderLen:HeaderLen], nc[:], pkt[HeaderLen:], pkt[:HeaderLen])
	noncePool.Put(nc)
	if err != nil {
		return nil, ErrAuth
	}
	s.mu.Lock()
	fresh := s.replay.Check(ctr)
	s.mu.Unlock()
	if !fresh {
		return nil, ErrReplay
	}
	return frame, nil
}
