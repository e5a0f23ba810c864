package crypto

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"
)

// Handshake messages. Little-endian indices; the Noise messages are those of
// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with the prologue "cab v1".
//
// Initiation (msg1), 131 bytes with two ciphers offered:
//
//	type=1 | reserved (3) | sender index (4) | Noise message 1 | mac1 (16)
//	Noise message 1 = e (32) | encrypted s (48) | encrypted payload (len+16)
//	payload = sender index (4) | timestamp (8, big endian unix ns) | n (1) | n cipher ids
//
// Response (msg2), 77 bytes:
//
//	type=2 | reserved (3) | sender index (4) | receiver index (4) | Noise message 2 | mac1 (16)
//	Noise message 2 = e (32) | encrypted payload (len+16)
//	payload = sender index (4) | cipher id (1)
//
// mac1 is a keyed BLAKE2s-128 over everything before it, keyed with
// BLAKE2s-256("mac1----" | the receiver's public key): anyone can compute
// it who knows that public key, so the responder can refuse garbage without
// a Diffie-Hellman. The indices in the clear are repeated inside the
// encrypted payloads, so a changed index fails the handshake.
const (
	macLen         = 16
	initFixed      = 8
	respFixed      = 12
	initMinLen     = initFixed + 32 + 48 + 16 + macLen
	responseMinLen = respFixed + 32 + 16 + macLen
	maxCiphers     = 8
	// maxHandshakeLen bounds what the parsers look at.
	maxHandshakeLen = 256
)

var (
	errBadHandshake = errors.New("crypto: bad handshake message")
	errMAC          = errors.New("crypto: handshake mac1 mismatch")
	errNoCipher     = errors.New("crypto: no cipher in common")
)

type hashT = hash.Hash

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

var prologue = []byte("cab v1")

// lowOrderProbe is any clamped scalar: X25519 with it fails exactly for
// the low-order points.
var lowOrderProbe = [32]byte{0: 8, 31: 64}

func noiseConfig(local PrivateKey, initiator bool) noise.Config {
	pub := local.Public()
	return noise.Config{
		CipherSuite:           suite,
		Pattern:               noise.HandshakeIK,
		Initiator:             initiator,
		Prologue:              prologue,
		PresharedKeyPlacement: 2,
		StaticKeypair:         noise.DHKey{Private: append([]byte(nil), local[:]...), Public: append([]byte(nil), pub[:]...)},
	}
}

// macKey returns the key of mac1 for messages to pub.
func macKey(pub PublicKey) [32]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(pub[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func mac1(key *[32]byte, msg []byte) [macLen]byte {
	h, _ := blake2s.New128(key[:])
	h.Write(msg)
	var m [macLen]byte
	h.Sum(m[:0])
	return m
}

func checkMAC(key *[32]byte, msg []byte) bool {
	if len(msg) < macLen {
		return false
	}
	want := mac1(key, msg[:len(msg)-macLen])
	return hmac.Equal(want[:], msg[len(msg)-macLen:])
}

func pskBytes(psk *Secret) []byte {
	if psk == nil {
		return make([]byte, KeyLen) // no PSK: all zero, as WireGuard does
	}
	return psk[:]
}

// An Initiator is the client side of one handshake attempt.
type Initiator struct {
	hs      *noise.HandshakeState
	local   uint32
	ciphers []Cipher
	macKey  [32]byte // for responses: keyed on our own public key
}

// NewInitiator builds the initiation message for remote, with an optional
// pre-shared key, carrying localIndex, the time now and the ciphers this
// side offers (in its order of preference).
func NewInitiator(local PrivateKey, remote PublicKey, psk *Secret, localIndex uint32, ciphers []Cipher, now time.Time) (*Initiator, []byte, error) {
	if len(ciphers) == 0 || len(ciphers) > maxCiphers {
		return nil, nil, fmt.Errorf("crypto: offer 1 to %d ciphers", maxCiphers)
	}
	cfg := noiseConfig(local, true)
	cfg.PeerStatic = append([]byte(nil), remote[:]...)
	cfg.PresharedKey = pskBytes(psk)
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: handshake: %w", err)
	}
	payload := make([]byte, 0, 13+len(ciphers))
	payload = binary.LittleEndian.AppendUint32(payload, localIndex)
	payload = binary.BigEndian.AppendUint64(payload, uint64(now.UnixNano()))
	payload = append(payload, byte(len(ciphers)))
	for _, c := range ciphers {
		payload = append(payload, byte(c))
	}
	msg := make([]byte, initFixed, 200)
	msg[0] = TypeInit
	binary.LittleEndian.PutUint32(msg[4:8], localIndex)
	msg, _, _, err = hs.WriteMessage(msg, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: handshake: %w", err)
	}
	mk := macKey(remote)
	m := mac1(&mk, msg)
	msg = append(msg, m[:]...)
	return &Initiator{hs: hs, local: localIndex, ciphers: ciphers, macKey: macKey(local.Public())}, msg, nil
}

// LocalIndex is the index this attempt asked the responder to use.
func (h *Initiator) LocalIndex() uint32 { return h.local }

// Consume authenticates the response; on success the Session is ready.
// An Initiator consumes at most one response.
func (h *Initiator) Consume(msg2 []byte) (*Session, error) {
	if h.hs == nil {
		return nil, errBadHandshake
	}
	if len(msg2) < responseMinLen || len(msg2) > maxHandshakeLen || msg2[0] != TypeResponse || msg2[1]|msg2[2]|msg2[3] != 0 {
		return nil, errBadHandshake
	}
	if binary.LittleEndian.Uint32(msg2[8:12]) != h.local {
		return nil, errBadHandshake
	}
	if !checkMAC(&h.macKey, msg2) {
		return nil, errMAC
	}
	// flynn/noise does not roll its state back when a Diffie-Hellman
	// fails, so a forged response with a low-order ephemeral key (mac1 is
	// computable by anyone who knows our public key) would spoil the
	// genuine one: refuse such keys before Noise sees them.
	if _, err := curve25519.X25519(lowOrderProbe[:], msg2[respFixed:respFixed+32]); err != nil {
		return nil, errBadHandshake
	}
	payload, cs1, cs2, err := h.hs.ReadMessage(nil, msg2[respFixed:len(msg2)-macLen])
	if err != nil {
		return nil, ErrAuth
	}
	h.hs = nil // one response only
	if len(payload) != 5 || cs1 == nil {
		return nil, errBadHandshake
	}
	// The responder's index is taken from the authenticated payload; the
	// copy in clear is only a hint and is not compared: by now the Noise
	// state is spent, and a forger who changed the copy in clear would
	// otherwise have killed the genuine handshake.
	remote := binary.LittleEndian.Uint32(payload[0:4])
	c := Cipher(payload[4])
	offered := false
	for _, o := range h.ciphers {
		offered = offered || o == c
	}
	if !offered {
		return nil, errNoCipher
	}
	return newSession(c, cs1.UnsafeKey(), cs2.UnsafeKey(), h.local, remote, true)
}

// A Responder answers initiations addressed to its static key.
type Responder struct {
	local   PrivateKey
	macKey  [32]byte
	ciphers []Cipher
}

// NewResponder returns a responder for local that agrees to ciphers, in its
// order of preference.
func NewResponder(local PrivateKey, ciphers []Cipher) *Responder {
	return &Responder{local: local, macKey: macKey(local.Public()), ciphers: ciphers}
}

// CheckMAC verifies an initiation's mac1 without any Diffie-Hellman.
func (r *Responder) CheckMAC(msg []byte) bool {
	if len(msg) < initMinLen || len(msg) > maxHandshakeLen || msg[0] != TypeInit {
		return false
	}
	return checkMAC(&r.macKey, msg)
}

// A PendingInit is an initiation that authenticated its sender's static
// key; the caller decides whether to answer it.
type PendingInit struct {
	r       *Responder
	hs      *noise.HandshakeState
	peer    PublicKey
	ts      uint64
	remote  uint32
	ciphers []Cipher
}

// ReadInit checks mac1 and processes an initiation.
func (r *Responder) ReadInit(msg1 []byte) (*PendingInit, error) {
	if !r.CheckMAC(msg1) {
		return nil, errMAC
	}
	if msg1[1]|msg1[2]|msg1[3] != 0 {
		return nil, errBadHandshake
	}
	hs, err := noise.NewHandshakeState(noiseConfig(r.local, false))
	if err != nil {
		return nil, fmt.Errorf("crypto: handshake: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg1[initFixed:len(msg1)-macLen])
	if err != nil {
		return nil, ErrAuth
	}
	if len(payload) < 14 {
		return nil, errBadHandshake
	}
	remote := binary.LittleEndian.Uint32(payload[0:4])
	if remote != binary.LittleEndian.Uint32(msg1[4:8]) {
		return nil, errBadHandshake
	}
	n := int(payload[12])
	if n == 0 || n > maxCiphers || len(payload) != 13+n {
		return nil, errBadHandshake
	}
	p := &PendingInit{r: r, hs: hs, ts: binary.BigEndian.Uint64(payload[4:12]), remote: remote}
	for _, c := range payload[13:] {
		p.ciphers = append(p.ciphers, Cipher(c))
	}
	copy(p.peer[:], hs.PeerStatic())
	return p, nil
}

// Peer is the initiator's static public key.
func (p *PendingInit) Peer() PublicKey { return p.peer }

// Timestamp is the initiator's clock at initiation, in unix nanoseconds.
// The caller refuses one not greater than the last it accepted from the
// same peer: a replayed initiation.
func (p *PendingInit) Timestamp() uint64 { return p.ts }

// Respond builds the response with the pre-shared key psk (nil: none) and
// returns the new session, which takes packets to localIndex. The cipher
// is the first of the responder's that the initiator offered. The response
// is never longer than the initiation.
func (p *PendingInit) Respond(psk *Secret, localIndex uint32) ([]byte, *Session, error) {
	if p.hs == nil {
		return nil, nil, errBadHandshake
	}
	var chosen Cipher
	for _, c := range p.r.ciphers {
		for _, o := range p.ciphers {
			if chosen == 0 && c == o {
				chosen = c
			}
		}
	}
	if chosen == 0 {
		return nil, nil, errNoCipher
	}
	if err := p.hs.SetPresharedKey(pskBytes(psk)); err != nil {
		return nil, nil, err
	}
	payload := binary.LittleEndian.AppendUint32(nil, localIndex)
	payload = append(payload, byte(chosen))
	msg := make([]byte, respFixed, responseMinLen+8)
	msg[0] = TypeResponse
	binary.LittleEndian.PutUint32(msg[4:8], localIndex)
	binary.LittleEndian.PutUint32(msg[8:12], p.remote)
	msg, cs1, cs2, err := p.hs.WriteMessage(msg, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: handshake: %w", err)
	}
	p.hs = nil
	mk := macKey(p.peer)
	m := mac1(&mk, msg)
	msg = append(msg, m[:]...)
	s, err := newSession(chosen, cs2.UnsafeKey(), cs1.UnsafeKey(), localIndex, p.remote, false)
	if err != nil {
		return nil, nil, err
	}
	return msg, s, nil
}
