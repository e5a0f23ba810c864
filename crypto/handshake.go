package crypto

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
)

// Handshake messages. Little-endian indices; the Noise messages are those of
// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with the prologue "cab v1".
//
// Initiation (msg1), 135 bytes with two ciphers offered (151 with mac2):
//
//	type=1 | flags (1) | reserved (2) | sender index (4) | Noise message 1 | mac1 (16) [| mac2 (16)]
//	flags: 1 = mac2 follows mac1
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
//
// Cookie reply (msg3), 64 bytes, WireGuard's: a responder under load
// answers an initiation with one instead of doing any Diffie-Hellman.
//
//	type=3 | reserved (3) | receiver index (4) | nonce (24) | encrypted cookie (16+16)
//
// The cookie is a keyed BLAKE2s-128 of the initiator's source address
// under a secret that changes every CookieRefresh; it is sealed with
// XChaCha20-Poly1305 under BLAKE2s-256("cookie--" | the responder's public
// key), with the initiation's mac1 as associated data, so that only who
// sent that initiation (or saw it) can read it. The initiator then sends
// its initiation again with mac2, a keyed BLAKE2s-128 of everything before
// mac2 under the cookie, for CookieRefresh at most: mac2 proves that the
// sender receives at the source address it claims.
const (
	macLen         = 16
	initFixed      = 8
	respFixed      = 12
	initMinLen     = initFixed + 32 + 48 + 16 + macLen
	responseMinLen = respFixed + 32 + 16 + macLen
	maxCiphers     = 8
	// maxHandshakeLen bounds what the parsers look at.
	maxHandshakeLen = 256
	// flagMAC2 in an initiation's second byte says that mac2 follows mac1.
	flagMAC2    byte = 1
	cookieLen        = 16
	cookieFixed      = 8
	// CookieReplyLen is the length of a cookie reply.
	CookieReplyLen = cookieFixed + chacha20poly1305.NonceSizeX + cookieLen + chacha20poly1305.Overhead
	// CookieRefresh is how long a cookie secret, and so a cookie, lives.
	CookieRefresh = 120 * time.Second
)

var (
	errBadHandshake = errors.New("crypto: bad handshake message")
	errMAC          = errors.New("crypto: handshake mac1 mismatch")
	errNoCipher     = errors.New("crypto: no cipher in common")
	errCookie       = errors.New("crypto: bad cookie reply")
)

type hashT = hash.Hash

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

var prologue = []byte("cab v1")

// lowOrderProbe is any clamped scalar: X25519 with it fails exactly for
// the low-order points.
var lowOrderProbe = [32]byte{0: 8, 31: 64}

func noiseConfig(local PrivateKey, pub PublicKey, initiator bool) noise.Config {
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
func macKey(pub PublicKey) [32]byte { return labelKey("mac1----", pub) }

// cookieKey returns the key that seals cookie replies from pub.
func cookieKey(pub PublicKey) [32]byte { return labelKey("cookie--", pub) }

func labelKey(label string, pub PublicKey) [32]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte(label))
	h.Write(pub[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func mac1(key *[32]byte, msg []byte) [macLen]byte { return keyedMAC(key[:], msg) }

// keyedMAC is BLAKE2s-128 of msg keyed with key (1 to 32 bytes).
func keyedMAC(key, msg []byte) [macLen]byte {
	h, _ := blake2s.New128(key)
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

// initMACs returns where an initiation's mac1 ends: its length, or its
// length less mac2 when its flags say mac2 follows.
func initMACs(msg []byte) int {
	if msg[1]&flagMAC2 != 0 {
		return len(msg) - macLen
	}
	return len(msg)
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
	// For cookie replies: the initiation as sent, the responder's cookie
	// key, the jar that keeps the cookie, and whether a reply was taken.
	msg       []byte
	cookieKey [32]byte
	jar       *CookieJar
	gotCookie bool
}

// NewInitiator builds the initiation message for remote, with an optional
// pre-shared key, carrying localIndex, the time now and the ciphers this
// side offers (in its order of preference). It carries no mac2: see
// CookieJar.NewInitiator.
func NewInitiator(local PrivateKey, remote PublicKey, psk *Secret, localIndex uint32, ciphers []Cipher, now time.Time) (*Initiator, []byte, error) {
	return newInitiator(local, local.Public(), remote, psk, localIndex, ciphers, now, nil)
}

// newInitiator is NewInitiator with local's public key given, and a jar.
func newInitiator(local PrivateKey, pub, remote PublicKey, psk *Secret, localIndex uint32, ciphers []Cipher, now time.Time, jar *CookieJar) (*Initiator, []byte, error) {
	if len(ciphers) == 0 || len(ciphers) > maxCiphers {
		return nil, nil, fmt.Errorf("crypto: offer 1 to %d ciphers", maxCiphers)
	}
	cfg := noiseConfig(local, pub, true)
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
	h := &Initiator{hs: hs, local: localIndex, ciphers: ciphers, macKey: macKey(pub), cookieKey: cookieKey(remote), jar: jar}
	h.msg = h.seal(msg, remote, now)
	return h, append([]byte(nil), h.msg...), nil
}

// seal appends mac1, and mac2 when the jar holds a fresh cookie, to msg,
// an initiation without MACs; it sets the flags to match.
func (h *Initiator) seal(msg []byte, remote PublicKey, now time.Time) []byte {
	cookie, ok := h.jar.cookie(now)
	msg[1] = 0
	if ok {
		msg[1] = flagMAC2
	}
	mk := macKey(remote)
	m := mac1(&mk, msg)
	msg = append(msg, m[:]...)
	if ok {
		m2 := keyedMAC(cookie[:], msg)
		msg = append(msg, m2[:]...)
	}
	return msg
}

// ConsumeCookieReply takes a cookie reply to this initiation: it keeps
// the cookie in the initiator's jar (an Initiator without a jar keeps it
// for this initiation alone) and returns the initiation again, now with
// mac2, for the caller to send at once. An Initiator takes one cookie
// reply; a reply that is not for its initiation, forged, or a second one
// is an error.
func (h *Initiator) ConsumeCookieReply(msg []byte, now time.Time) ([]byte, error) {
	if h.gotCookie || h.hs == nil || len(msg) != CookieReplyLen || msg[0] != TypeCookie || msg[1]|msg[2]|msg[3] != 0 {
		return nil, errCookie
	}
	if binary.LittleEndian.Uint32(msg[4:8]) != h.local {
		return nil, errCookie
	}
	aead, err := chacha20poly1305.NewX(h.cookieKey[:])
	if err != nil {
		return nil, err
	}
	end := initMACs(h.msg)
	ad := h.msg[end-macLen : end] // the mac1 of the initiation as sent
	nonce := msg[cookieFixed : cookieFixed+chacha20poly1305.NonceSizeX]
	var cookie [cookieLen]byte
	if _, err := aead.Open(cookie[:0], nonce, msg[cookieFixed+chacha20poly1305.NonceSizeX:], ad); err != nil {
		return nil, errCookie
	}
	h.gotCookie = true
	if h.jar == nil {
		h.jar = new(CookieJar)
	}
	h.jar.set(cookie, now)
	// The same Noise message, with mac1 for the new flags and mac2.
	body := append([]byte(nil), h.msg[:end-macLen]...)
	var remote PublicKey
	copy(remote[:], h.hs.PeerStatic())
	h.msg = h.seal(body, remote, now)
	return append([]byte(nil), h.msg...), nil
}

// A CookieJar keeps what an initiator learned from a responder's cookie
// reply: the cookie, for CookieRefresh less a margin. Keep one per remote
// peer and build initiations with its NewInitiator: they carry mac2 while
// the cookie is fresh. The zero value is an empty jar; it is safe for
// concurrent use. A nil jar holds nothing.
type CookieJar struct {
	mu  sync.Mutex
	c   [cookieLen]byte
	at  time.Time
	has bool
}

// cookieMargin is how much earlier than the responder the initiator
// forgets a cookie, so that it never sends one that just expired.
const cookieMargin = 5 * time.Second

// NewInitiator is crypto.NewInitiator with mac2 from the cookie in j,
// when it holds a fresh one; a cookie reply to the initiation goes into j.
func (j *CookieJar) NewInitiator(local PrivateKey, remote PublicKey, psk *Secret, localIndex uint32, ciphers []Cipher, now time.Time) (*Initiator, []byte, error) {
	return newInitiator(local, local.Public(), remote, psk, localIndex, ciphers, now, j)
}

func (j *CookieJar) set(cookie [cookieLen]byte, now time.Time) {
	j.mu.Lock()
	j.c, j.at, j.has = cookie, now, true
	j.mu.Unlock()
}

// cookie returns the cookie, the key of mac2, if j holds a fresh one.
func (j *CookieJar) cookie(now time.Time) ([cookieLen]byte, bool) {
	if j == nil {
		return [cookieLen]byte{}, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.has || now.Sub(j.at) >= CookieRefresh-cookieMargin || now.Before(j.at) {
		return [cookieLen]byte{}, false
	}
	return j.c, true
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
	binding := h.hs.ChannelBinding()
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
	return newSession(c, cs1.UnsafeKey(), cs2.UnsafeKey(), h.local, remote, true, binding)
}

// A Responder answers initiations addressed to its static key. It is
// safe for concurrent use.
type Responder struct {
	local     PrivateKey
	pub       PublicKey // local's, computed once
	macKey    [32]byte
	cookieKey [32]byte
	ciphers   []Cipher

	// The cookie secret, and when it was made (zero: never).
	mu       sync.Mutex
	secret   [32]byte
	secretAt time.Time
}

// NewResponder returns a responder for local that agrees to ciphers, in its
// order of preference.
func NewResponder(local PrivateKey, ciphers []Cipher) *Responder {
	pub := local.Public()
	return &Responder{local: local, pub: pub, macKey: macKey(pub), cookieKey: cookieKey(pub), ciphers: ciphers}
}

// CheckMAC verifies an initiation's mac1 without any Diffie-Hellman.
func (r *Responder) CheckMAC(msg []byte) bool {
	if len(msg) < initMinLen || len(msg) > maxHandshakeLen || msg[0] != TypeInit {
		return false
	}
	return checkMAC(&r.macKey, msg[:initMACs(msg)])
}

// CheckMAC2 reports whether an initiation whose mac1 is good carries a
// mac2 made with the cookie of src, the bytes that name where it came
// from (an IP address: its 4 or 16 bytes), under the secret of the last
// CookieRefresh. A responder under load does Diffie-Hellman only for an
// initiation that passes, and answers the others with CookieReply. Without
// mac2, or with a secret older than CookieRefresh, it is false.
func (r *Responder) CheckMAC2(msg, src []byte, now time.Time) bool {
	if !r.CheckMAC(msg) || msg[1]&flagMAC2 == 0 || len(msg) < initMinLen+macLen {
		return false
	}
	cookie, ok := r.cookie(src, now, false)
	if !ok {
		return false
	}
	want := keyedMAC(cookie[:], msg[:len(msg)-macLen])
	return hmac.Equal(want[:], msg[len(msg)-macLen:])
}

// cookie returns src's cookie under the current secret; with renew, a
// secret older than CookieRefresh is replaced first, otherwise it makes no
// cookie.
func (r *Responder) cookie(src []byte, now time.Time, renew bool) ([cookieLen]byte, bool) {
	r.mu.Lock()
	fresh := !r.secretAt.IsZero() && now.Sub(r.secretAt) < CookieRefresh && !now.Before(r.secretAt)
	if !fresh {
		if !renew {
			r.mu.Unlock()
			return [cookieLen]byte{}, false
		}
		if _, err := rand.Read(r.secret[:]); err != nil {
			r.mu.Unlock()
			return [cookieLen]byte{}, false
		}
		r.secretAt = now
	}
	secret := r.secret
	r.mu.Unlock()
	return keyedMAC(secret[:], src), true
}

// CookieReply returns the cookie reply to msg1, an initiation whose mac1 is
// good, from src (as for CheckMAC2): 64 bytes, never longer than the
// initiation. It costs no Diffie-Hellman.
func (r *Responder) CookieReply(msg1, src []byte, now time.Time) ([]byte, error) {
	if !r.CheckMAC(msg1) {
		return nil, errMAC
	}
	cookie, ok := r.cookie(src, now, true)
	if !ok {
		return nil, errCookie
	}
	reply := make([]byte, cookieFixed+chacha20poly1305.NonceSizeX, CookieReplyLen)
	reply[0] = TypeCookie
	copy(reply[4:8], msg1[4:8]) // the initiator's index
	nonce := reply[cookieFixed:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(r.cookieKey[:])
	if err != nil {
		return nil, err
	}
	end := initMACs(msg1)
	return aead.Seal(reply, nonce, cookie[:], msg1[end-macLen:end]), nil
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

// ReadInit checks mac1 and processes an initiation. It does not look at
// mac2 (see CheckMAC2), and refuses an initiator's static key that is not
// canonical.
func (r *Responder) ReadInit(msg1 []byte) (*PendingInit, error) {
	if !r.CheckMAC(msg1) {
		return nil, errMAC
	}
	if msg1[1]&^flagMAC2 != 0 || msg1[2]|msg1[3] != 0 {
		return nil, errBadHandshake
	}
	hs, err := noise.NewHandshakeState(noiseConfig(r.local, r.pub, false))
	if err != nil {
		return nil, fmt.Errorf("crypto: handshake: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg1[initFixed:initMACs(msg1)-macLen])
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
	if !p.peer.Canonical() {
		// The same point as a canonical key: it would be a second peer
		// of the same site.
		return nil, errBadHandshake
	}
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
	binding := p.hs.ChannelBinding()
	p.hs = nil
	mk := macKey(p.peer)
	m := mac1(&mk, msg)
	msg = append(msg, m[:]...)
	s, err := newSession(chosen, cs2.UnsafeKey(), cs1.UnsafeKey(), localIndex, p.remote, false, binding)
	if err != nil {
		return nil, nil, err
	}
	return msg, s, nil
}
