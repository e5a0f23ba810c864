package crypto

import (
	"bytes"
	"encoding/base64"
	"net/netip"
	"testing"
	"time"
)

var (
	srcA = netip.MustParseAddr("192.0.2.10").AsSlice()
	srcB = netip.MustParseAddr("198.51.100.7").AsSlice()
	srcC = netip.MustParseAddr("2001:db8::1").AsSlice()
)

// highBit returns k with bit 255 set: the same X25519 point.
func highBit(k PublicKey) PublicKey {
	k[31] |= 0x80
	return k
}

func TestCanonicalKeys(t *testing.T) {
	for range 20 {
		if k := key(t).Public(); !k.Canonical() {
			t.Fatalf("a made key is not canonical: %s", k)
		}
	}
	pub := key(t).Public()
	bad := highBit(pub)
	if bad.Canonical() {
		t.Fatal("a key with bit 255 set is canonical")
	}
	if fieldPrime.Canonical() {
		t.Fatal("2^255-19 is canonical")
	}
	below := fieldPrime
	below[0]--
	if !below.Canonical() {
		t.Fatal("2^255-20 is not canonical")
	}
	if _, err := ParsePublicKey(base64.StdEncoding.EncodeToString(bad[:])); err == nil {
		t.Fatal("ParsePublicKey took a key with bit 255 set")
	}
	if got, err := ParsePublicKey(pub.String()); err != nil || got != pub {
		t.Fatalf("ParsePublicKey(%s) = %s, %v", pub, got, err)
	}
}

// TestReadInitRefusesNonCanonicalStatic: an initiator that sends its
// static key with bit 255 set (the same point, so the handshake would
// complete) is refused, so that one site is never two peers.
func TestReadInitRefusesNonCanonicalStatic(t *testing.T) {
	ik, rk := key(t), key(t)
	_, m1, err := newInitiator(ik, highBit(ik.Public()), rk.Public(), nil, 5, LocalCiphers(), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewResponder(rk, LocalCiphers()).ReadInit(m1); err == nil {
		t.Fatal("an initiation with a non-canonical static key was accepted")
	}
	_, m1, _ = newInitiator(ik, ik.Public(), rk.Public(), nil, 5, LocalCiphers(), time.Now(), nil)
	if _, err := NewResponder(rk, LocalCiphers()).ReadInit(m1); err != nil {
		t.Fatalf("the canonical initiation was refused: %v", err)
	}
}

// TestResponderPublicKeyOnce: answering an initiation computes no X25519
// of the responder's own key; NewResponder did it once.
func TestResponderPublicKeyOnce(t *testing.T) {
	ik, rk := key(t), key(t)
	r := NewResponder(rk, LocalCiphers())
	_, m1, _ := NewInitiator(ik, rk.Public(), nil, 5, LocalCiphers(), time.Now())
	n := 0
	orig := x25519
	x25519 = func(s, p []byte) ([]byte, error) { n++; return orig(s, p) }
	defer func() { x25519 = orig }()
	p, err := r.ReadInit(m1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Respond(nil, 6); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("ReadInit and Respond computed the responder's public key %d times", n)
	}
}

// underLoad runs the handshake as a responder under load does: cookie
// reply, the initiation again with mac2, Diffie-Hellman only then.
func TestCookieRoundTrip(t *testing.T) {
	ik, rk := key(t), key(t)
	r := NewResponder(rk, LocalCiphers())
	var jar CookieJar
	now := time.Unix(1_000_000, 0)
	h, m1, err := jar.NewInitiator(ik, rk.Public(), &Secret{7}, 42, LocalCiphers(), now)
	if err != nil {
		t.Fatal(err)
	}
	if m1[1] != 0 {
		t.Fatal("an empty jar added mac2")
	}
	if !r.CheckMAC(m1) {
		t.Fatal("mac1 refused")
	}
	if r.CheckMAC2(m1, srcA, now) {
		t.Fatal("mac2 absent, yet CheckMAC2 passed")
	}
	reply, err := r.CookieReply(m1, srcA, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) != CookieReplyLen || len(reply) > len(m1) {
		t.Fatalf("cookie reply of %d bytes for an initiation of %d", len(reply), len(m1))
	}
	if typ, idx, ok := ParseHeader(reply); !ok || typ != TypeCookie || idx != 42 {
		t.Fatalf("ParseHeader(cookie reply) = %d, %d, %v", typ, idx, ok)
	}
	m1b, err := h.ConsumeCookieReply(reply, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(m1b) != len(m1)+macLen || m1b[1] != flagMAC2 {
		t.Fatalf("re-sent initiation: %d bytes, flags %d", len(m1b), m1b[1])
	}
	if !r.CheckMAC(m1b) || !r.CheckMAC2(m1b, srcA, now.Add(2*time.Second)) {
		t.Fatal("the initiation with mac2 was refused")
	}
	if _, err := h.ConsumeCookieReply(reply, now); err == nil {
		t.Fatal("a second cookie reply was taken")
	}
	// The handshake completes with the initiation that carries mac2.
	p, err := r.ReadInit(m1b)
	if err != nil {
		t.Fatal(err)
	}
	m2, rs, err := p.Respond(&Secret{7}, 43)
	if err != nil {
		t.Fatal(err)
	}
	is, err := h.Consume(m2)
	if err != nil {
		t.Fatal(err)
	}
	if got := seal(t, is, []byte("frame")); got == nil {
		t.Fatal("no packet")
	} else if f, err := rs.Open(got); err != nil || string(f) != "frame" {
		t.Fatalf("open: %q %v", f, err)
	}
	// The next initiation from the jar carries mac2 by itself.
	_, m1c, _ := jar.NewInitiator(ik, rk.Public(), &Secret{7}, 44, LocalCiphers(), now.Add(time.Minute))
	if !r.CheckMAC2(m1c, srcA, now.Add(time.Minute)) {
		t.Fatal("a later initiation from the jar has no good mac2")
	}
	// ...until the jar's cookie is too old.
	later := now.Add(CookieRefresh)
	_, m1d, _ := jar.NewInitiator(ik, rk.Public(), &Secret{7}, 45, LocalCiphers(), later)
	if m1d[1] != 0 || len(m1d) != len(m1) {
		t.Fatal("the jar used a cookie older than CookieRefresh")
	}
}

func TestCookieWrongSource(t *testing.T) {
	ik, rk := key(t), key(t)
	r := NewResponder(rk, LocalCiphers())
	now := time.Unix(1_000_000, 0)
	h, m1, _ := new(CookieJar).NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), now)
	reply, err := r.CookieReply(m1, srcA, now)
	if err != nil {
		t.Fatal(err)
	}
	m1b, err := h.ConsumeCookieReply(reply, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range [][]byte{srcB, srcC, srcA[:3]} {
		if r.CheckMAC2(m1b, src, now) {
			t.Fatalf("mac2 made for %v passed for %v", srcA, src)
		}
	}
	if !r.CheckMAC2(m1b, srcA, now) {
		t.Fatal("mac2 refused for its own source")
	}
	// A changed message fails mac1 or mac2.
	bad := append([]byte(nil), m1b...)
	bad[len(bad)-1] ^= 1
	if r.CheckMAC2(bad, srcA, now) {
		t.Fatal("a changed mac2 passed")
	}
}

func TestCookieRotation(t *testing.T) {
	ik, rk := key(t), key(t)
	r := NewResponder(rk, LocalCiphers())
	now := time.Unix(1_000_000, 0)
	h, m1, _ := new(CookieJar).NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), now)
	reply, _ := r.CookieReply(m1, srcA, now)
	m1b, err := h.ConsumeCookieReply(reply, now)
	if err != nil {
		t.Fatal(err)
	}
	if !r.CheckMAC2(m1b, srcA, now.Add(CookieRefresh-time.Second)) {
		t.Fatal("mac2 refused within CookieRefresh")
	}
	if r.CheckMAC2(m1b, srcA, now.Add(CookieRefresh)) {
		t.Fatal("mac2 passed with a secret CookieRefresh old")
	}
	// A new reply makes a new secret: the old cookie stays refused.
	_, m1x, _ := NewInitiator(ik, rk.Public(), nil, 2, LocalCiphers(), now)
	if _, err := r.CookieReply(m1x, srcA, now.Add(CookieRefresh+time.Second)); err != nil {
		t.Fatal(err)
	}
	if r.CheckMAC2(m1b, srcA, now.Add(CookieRefresh+2*time.Second)) {
		t.Fatal("a cookie of the old secret passed with the new one")
	}
}

func TestCookieForgedReply(t *testing.T) {
	ik, rk, other := key(t), key(t), key(t)
	now := time.Unix(1_000_000, 0)
	var jar CookieJar
	h, m1, _ := jar.NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), now)
	// From another responder key: the cookie key differs.
	forged, err := NewResponder(other, LocalCiphers()).CookieReply(append(m1[:0:0], m1...), srcA, now)
	if err == nil {
		t.Fatal("another responder made a reply to an initiation whose mac1 is not for it")
	}
	_ = forged
	r := NewResponder(rk, LocalCiphers())
	reply, _ := r.CookieReply(m1, srcA, now)
	// For another initiation (its mac1 is the associated data).
	_, m1other, _ := NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), now.Add(time.Second))
	replyOther, _ := r.CookieReply(m1other, srcA, now)
	for name, msg := range map[string][]byte{
		"flipped ciphertext": flip(reply, CookieReplyLen-1),
		"flipped nonce":      flip(reply, cookieFixed),
		"other index":        flip(reply, 4),
		"reserved":           flip(reply, 1),
		"other initiation":   replyOther,
		"short":              reply[:CookieReplyLen-1],
		"long":               append(append([]byte(nil), reply...), 0),
		"a response type":    append([]byte{TypeResponse}, reply[1:]...),
	} {
		if _, err := h.ConsumeCookieReply(msg, now); err == nil {
			t.Errorf("%s: a forged cookie reply was taken", name)
		}
	}
	if _, ok := jar.cookie(now); ok {
		t.Fatal("a forged reply filled the jar")
	}
	if _, err := h.ConsumeCookieReply(reply, now); err != nil {
		t.Fatalf("the genuine reply after forged ones: %v", err)
	}
}

func TestCookieReplyNeedsMAC1(t *testing.T) {
	rk := key(t)
	r := NewResponder(rk, LocalCiphers())
	junk := make([]byte, 131)
	junk[0] = TypeInit
	if _, err := r.CookieReply(junk, srcA, time.Now()); err == nil {
		t.Fatal("a cookie reply to an initiation with a bad mac1")
	}
}

// TestInitiationWithoutCookieUnchanged: with no cookie, an initiation is
// what a cab that knows no cookies sends and reads.
func TestInitiationWithoutCookieUnchanged(t *testing.T) {
	ik, rk := key(t), key(t)
	_, m1, _ := new(CookieJar).NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), time.Now())
	_, plain, _ := NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), time.Now())
	if m1[1]|m1[2]|m1[3] != 0 || len(m1) != len(plain) || len(m1) != initMinLen+13+len(LocalCiphers()) {
		t.Fatalf("initiation without a cookie: flags % x, %d bytes", m1[1:4], len(m1))
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func FuzzConsumeCookieReply(f *testing.F) {
	ik, rk := key(f), key(f)
	now := time.Unix(1_000_000, 0)
	_, m1, _ := NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), now)
	r := NewResponder(rk, LocalCiphers())
	genuine, err := r.CookieReply(m1, srcA, now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(genuine)
	f.Add(genuine[:cookieFixed])
	f.Add([]byte{TypeCookie, 0, 0, 0, 9, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		// A fresh initiator with the same initiation: the seed reply is
		// for it.
		h := &Initiator{local: 9, msg: m1, cookieKey: cookieKey(rk.Public()), hs: nil}
		if _, err := h.ConsumeCookieReply(msg, now); err == nil {
			t.Fatal("a spent initiator took a cookie reply")
		}
		h2, _, _ := NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), now)
		h2.msg = m1
		m1b, err := h2.ConsumeCookieReply(msg, now)
		if err != nil {
			return
		}
		if !bytes.Equal(msg, genuine) {
			t.Fatalf("a reply that was never sent was taken: % x", msg)
		}
		if !r.CheckMAC2(m1b, srcA, now) {
			t.Fatal("the genuine reply gave a bad mac2")
		}
		ParseHeader(msg)
	})
}

// BenchmarkRespond is the responder's cost of one initiation: ReadInit and
// Respond (two Diffie-Hellmans of its own in IKpsk2, three X25519 in all
// with the ephemeral's).
func BenchmarkRespond(b *testing.B) {
	ik, rk := key(b), key(b)
	r := NewResponder(rk, LocalCiphers())
	msgs := make([][]byte, 64)
	for i := range msgs {
		_, msgs[i], _ = NewInitiator(ik, rk.Public(), nil, uint32(i+1), LocalCiphers(), time.Now())
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p, err := r.ReadInit(msgs[i%len(msgs)])
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := p.Respond(nil, 7); err != nil {
			b.Fatal(err)
		}
	}
}
