package crypto

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func key(t testing.TB) PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// handshake runs a full handshake and returns both sessions.
func handshake(t testing.TB, ipsk, rpsk *Secret, ic, rc []Cipher) (*Session, *Session, error) {
	t.Helper()
	ik, rk := key(t), key(t)
	h, m1, err := NewInitiator(ik, rk.Public(), ipsk, 111, ic, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(rk, rc)
	if !r.CheckMAC(m1) {
		t.Fatal("mac1 of a genuine initiation refused")
	}
	p, err := r.ReadInit(m1)
	if err != nil {
		t.Fatal(err)
	}
	if p.Peer() != ik.Public() {
		t.Fatal("responder saw the wrong initiator key")
	}
	m2, rs, err := p.Respond(rpsk, 222)
	if err != nil {
		return nil, nil, err
	}
	if len(m2) > len(m1) {
		t.Fatalf("response %d bytes > initiation %d bytes", len(m2), len(m1))
	}
	is, err := h.Consume(m2)
	if err != nil {
		return nil, rs, err
	}
	return is, rs, nil
}

func seal(t testing.TB, s *Session, frame []byte) []byte {
	t.Helper()
	buf := make([]byte, HeaderLen+len(frame)+TagLen)
	copy(buf[HeaderLen:], frame)
	pkt, err := s.Seal(buf, len(frame))
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

func TestHandshakeAndData(t *testing.T) {
	both := []Cipher{CipherAES256GCM, CipherChaCha20Poly1305}
	cha := []Cipher{CipherChaCha20Poly1305, CipherAES256GCM}
	for _, tc := range []struct {
		name   string
		psk    *Secret
		ic, rc []Cipher
		want   Cipher
	}{
		{"no psk aes", nil, both, both, CipherAES256GCM},
		{"psk aes", &Secret{1, 2, 3}, both, both, CipherAES256GCM},
		{"psk chacha responder pref", &Secret{9}, both, cha, CipherChaCha20Poly1305},
		{"chacha only", nil, []Cipher{CipherChaCha20Poly1305}, both, CipherChaCha20Poly1305},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is, rs, err := handshake(t, tc.psk, tc.psk, tc.ic, tc.rc)
			if err != nil {
				t.Fatal(err)
			}
			if is.Cipher() != tc.want || rs.Cipher() != tc.want {
				t.Fatalf("ciphers %v/%v, want %v", is.Cipher(), rs.Cipher(), tc.want)
			}
			if is.RemoteIndex() != rs.LocalIndex() || rs.RemoteIndex() != is.LocalIndex() || !is.IsInitiator() || rs.IsInitiator() {
				t.Fatal("indices or roles wrong")
			}
			for _, pair := range [][2]*Session{{is, rs}, {rs, is}} {
				for _, size := range []int{0, 1, 60, 1514, 9216} {
					frame := bytes.Repeat([]byte{byte(size)}, size)
					pkt := seal(t, pair[0], frame)
					if bytes.Contains(pkt, frame) && size > 8 {
						t.Fatal("plaintext visible in packet")
					}
					typ, idx, ok := ParseHeader(pkt)
					if !ok || typ != TypeData || idx != pair[1].LocalIndex() {
						t.Fatalf("header: %d %d %v", typ, idx, ok)
					}
					got, err := pair[1].Open(pkt)
					if err != nil || !bytes.Equal(got, frame) {
						t.Fatalf("open %d bytes: %v", size, err)
					}
				}
			}
		})
	}
}

func TestWrongPSK(t *testing.T) {
	_, _, err := handshake(t, &Secret{1}, &Secret{2}, LocalCiphers(), LocalCiphers())
	if err == nil {
		t.Fatal("handshake with different PSKs succeeded")
	}
	_, _, err = handshake(t, nil, &Secret{2}, LocalCiphers(), LocalCiphers())
	if err == nil {
		t.Fatal("handshake with PSK on one side only succeeded")
	}
}

func TestWrongResponder(t *testing.T) {
	ik, rk, other := key(t), key(t), key(t)
	_, m1, err := NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(other, LocalCiphers())
	if r.CheckMAC(m1) {
		t.Fatal("another responder accepted mac1")
	}
	if _, err := r.ReadInit(m1); err == nil {
		t.Fatal("another responder read the initiation")
	}
}

func TestTamperRejected(t *testing.T) {
	is, rs, err := handshake(t, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		t.Fatal(err)
	}
	frame := bytes.Repeat([]byte{0xab}, 100)
	for _, pos := range []int{0, 1, 3, 4, 8, 15, HeaderLen, HeaderLen + 50, HeaderLen + 99, HeaderLen + 100, HeaderLen + 115} {
		pkt := seal(t, is, frame)
		pkt[pos] ^= 0x01
		if _, err := rs.Open(pkt); err == nil {
			t.Errorf("flipped byte %d accepted", pos)
		}
	}
	// Truncated.
	pkt := seal(t, is, frame)
	if _, err := rs.Open(pkt[:len(pkt)-1]); !errors.Is(err, ErrAuth) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := rs.Open(pkt[:HeaderLen+TagLen-1]); !errors.Is(err, ErrShort) {
		t.Errorf("runt: %v", err)
	}
	// Replay.
	pkt = seal(t, is, frame)
	cp := append([]byte(nil), pkt...)
	if _, err := rs.Open(pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Open(cp); !errors.Is(err, ErrReplay) {
		t.Errorf("replay: %v", err)
	}
}

func TestTamperedHandshake(t *testing.T) {
	ik, rk := key(t), key(t)
	h, m1, _ := NewInitiator(ik, rk.Public(), nil, 5, LocalCiphers(), time.Now())
	r := NewResponder(rk, LocalCiphers())
	for i := range m1 {
		bad := append([]byte(nil), m1...)
		bad[i] ^= 0x80
		if _, err := r.ReadInit(bad); err == nil {
			t.Errorf("initiation with byte %d flipped accepted", i)
		}
	}
	p, err := r.ReadInit(m1)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, err := p.Respond(nil, 6)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), m2...)
	bad[20] ^= 1
	if _, err := h.Consume(bad); err == nil {
		t.Error("tampered response accepted")
	}
}

func TestSealOpenAllocs(t *testing.T) {
	is, rs, err := handshake(t, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, HeaderLen+1420+TagLen)
	pkt := make([]byte, len(buf))
	a := testing.AllocsPerRun(200, func() {
		p, _ := is.Seal(buf, 1420)
		copy(pkt, p)
		if _, err := rs.Open(pkt); err != nil {
			panic(err)
		}
	})
	if a != 0 {
		t.Fatalf("Seal+Open allocate %v times per run", a)
	}
}

func TestKeys(t *testing.T) {
	k := key(t)
	pk := k.Public()
	back, err := ParseKey(" " + pk.String() + "\n")
	if err != nil || PublicKey(back) != pk {
		t.Fatal("public key round trip")
	}
	if len(pk.Short()) != 8 || !strings.HasPrefix(pk.String(), pk.Short()) {
		t.Fatal("Short")
	}
	for _, bad := range []string{"", "abc", "!!!!", strings.Repeat("A", 40)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	if PSKStatic(Secret{1}) != PSKStatic(Secret{1}) || PSKStatic(Secret{1}) == PSKStatic(Secret{2}) {
		t.Fatal("PSKStatic not deterministic or not distinct")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKeyFile(path)
	if err != nil || PrivateKey(got) != k {
		t.Fatalf("key file round trip: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("mode 0644 key: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	is, rs, err := handshake(f, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		f.Fatal(err)
	}
	genuine := seal(f, is, []byte("a genuine frame, sealed for real"))
	f.Add(genuine)
	f.Add(genuine[:HeaderLen+TagLen])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		in := append([]byte(nil), pkt...)
		frame, err := rs.Open(in)
		if err == nil && !bytes.Equal(pkt, genuine) {
			t.Fatalf("accepted a packet that was never sealed: % x (frame % x)", pkt, frame)
		}
		ParseHeader(pkt)
	})
}

// FuzzReadInit mutates initiations and fixes up their mac1 (and, when
// the flags say so, leaves room for mac2), so that the fuzzer gets past
// the cheap MAC into the Noise message behind it.
func FuzzReadInit(f *testing.F) {
	ik, rk := key(f), key(f)
	now := time.Now()
	_, m1, _ := NewInitiator(ik, rk.Public(), &Secret{3}, 9, LocalCiphers(), now)
	r := NewResponder(rk, LocalCiphers())
	// The same initiation with mac2, as sent after a cookie reply.
	var jar CookieJar
	h, m1c, _ := jar.NewInitiator(ik, rk.Public(), &Secret{3}, 9, LocalCiphers(), now)
	reply, _ := r.CookieReply(m1c, srcA, now)
	m1b, err := h.ConsumeCookieReply(reply, now)
	if err != nil {
		f.Fatal(err)
	}
	_, one, _ := NewInitiator(ik, rk.Public(), nil, 7, []Cipher{CipherChaCha20Poly1305}, now)
	for _, m := range [][]byte{m1, m1b, one, m1[:initMinLen], {TypeInit}} {
		f.Add(m, false)
		f.Add(m, true)
	}
	genuine := map[string]bool{string(m1[initFixed : len(m1)-macLen]): true, string(m1b[initFixed : len(m1b)-2*macLen]): true,
		string(one[initFixed : len(one)-macLen]): true}
	f.Fuzz(func(t *testing.T, msg []byte, fixMAC bool) {
		if fixMAC && len(msg) >= initMinLen && len(msg) <= maxHandshakeLen {
			msg = append([]byte(nil), msg...)
			end := initMACs(msg)
			mk := macKey(rk.Public())
			m := mac1(&mk, msg[:end-macLen])
			copy(msg[end-macLen:end], m[:])
		}
		p, err := r.ReadInit(msg)
		if err != nil {
			return
		}
		if !genuine[string(msg[initFixed:initMACs(msg)-macLen])] || le32(msg[4:8]) != 9 && le32(msg[4:8]) != 7 {
			t.Fatalf("a changed initiation was accepted: % x", msg)
		}
		if p.Peer() != ik.Public() {
			t.Fatal("accepted with the wrong peer key")
		}
		m2, _, err := p.Respond(&Secret{3}, 10)
		if err == nil && len(m2) > len(msg) {
			t.Fatal("response longer than initiation")
		}
	})
}

func FuzzConsume(f *testing.F) {
	ik, rk := key(f), key(f)
	h0, m1, _ := NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), time.Now())
	p, _ := NewResponder(rk, LocalCiphers()).ReadInit(m1)
	m2, _, _ := p.Respond(nil, 10)
	_ = h0
	for _, m := range [][]byte{m2, m2[:responseMinLen], {TypeResponse, 0, 0, 0}} {
		f.Add(m, false)
		f.Add(m, true)
	}
	mk := macKey(ik.Public())
	f.Fuzz(func(t *testing.T, msg []byte, fixMAC bool) {
		// With mac1 fixed up, the fuzzer gets past it to the Noise
		// message behind.
		if fixMAC && len(msg) >= responseMinLen {
			msg = append([]byte(nil), msg...)
			m := mac1(&mk, msg[:len(msg)-macLen])
			copy(msg[len(msg)-macLen:], m[:])
		}
		h, _, err := NewInitiator(ik, rk.Public(), nil, 9, LocalCiphers(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Consume(msg); err == nil {
			t.Fatal("a response to another handshake was accepted")
		}
	})
}

func BenchmarkSealOpen(b *testing.B) {
	for _, c := range []Cipher{CipherAES256GCM, CipherChaCha20Poly1305} {
		is, rs, err := handshake(b, nil, nil, []Cipher{c}, []Cipher{c})
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{64, 1420, 9000} {
			buf := make([]byte, HeaderLen+size+TagLen)
			b.Run(c.String()+"/seal/"+itoa(size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					is.Seal(buf, size)
				}
			})
			pkt := make([]byte, len(buf))
			b.Run(c.String()+"/open/"+itoa(size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					p, _ := is.Seal(buf, size)
					copy(pkt, p)
					b.StartTimer()
					if _, err := rs.Open(pkt); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkHandshake(b *testing.B) {
	ik, rk := key(b), key(b)
	r := NewResponder(rk, LocalCiphers())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h, m1, _ := NewInitiator(ik, rk.Public(), nil, 1, LocalCiphers(), time.Now())
		p, err := r.ReadInit(m1)
		if err != nil {
			b.Fatal(err)
		}
		m2, _, _ := p.Respond(nil, 2)
		if _, err := h.Consume(m2); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(n int) string {
	s := ""
	for n > 0 {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}

func TestSealTypeFragment(t *testing.T) {
	is, rs, err := handshake(t, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, HeaderLen+10+TagLen)
	pkt, err := is.SealType(TypeFragment, buf, 10)
	if err != nil {
		t.Fatal(err)
	}
	if typ, idx, ok := ParseHeader(pkt); !ok || typ != TypeFragment || idx != rs.LocalIndex() {
		t.Fatalf("header %d %d %v", typ, idx, ok)
	}
	cp := append([]byte(nil), pkt...)
	cp[0] = TypeData // the type is authenticated
	if _, err := rs.Open(cp); err == nil {
		t.Fatal("a fragment relabelled as data opened")
	}
	if _, err := rs.Open(pkt); err != nil {
		t.Fatal(err)
	}
}

// TestForgedResponsesDoNotSpoilTheHandshake: a response with a changed
// index in clear, or with a low-order ephemeral key and a valid mac1
// (anyone can compute it), must not stop the genuine response from
// completing the handshake.
func TestForgedResponsesDoNotSpoilTheHandshake(t *testing.T) {
	ik, rk := key(t), key(t)
	h, m1, err := NewInitiator(ik, rk.Public(), nil, 5, LocalCiphers(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewResponder(rk, LocalCiphers()).ReadInit(m1)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, err := p.Respond(nil, 6)
	if err != nil {
		t.Fatal(err)
	}
	mk := macKey(ik.Public())
	remac := func(b []byte) []byte {
		m := mac1(&mk, b[:len(b)-macLen])
		copy(b[len(b)-macLen:], m[:])
		return b
	}
	lowOrder := remac(append([]byte(nil), m2...))
	copy(lowOrder[respFixed:respFixed+32], make([]byte, 32)) // the zero point
	remac(lowOrder)
	if _, err := h.Consume(lowOrder); err == nil {
		t.Fatal("a low-order ephemeral key was accepted")
	}
	flipped := append([]byte(nil), m2...)
	flipped[4] ^= 0xff // the responder's index in clear
	remac(flipped)
	s, err := h.Consume(flipped)
	if err != nil {
		t.Fatalf("a changed index in clear: %v", err)
	}
	if s.RemoteIndex() != 6 {
		t.Fatalf("remote index %d, want 6 from the authenticated payload", s.RemoteIndex())
	}
}
