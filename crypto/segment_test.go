package crypto

import (
	"bytes"
	"testing"
)

// The channel binding is the same on both ends of a session and differs
// between sessions, so a segment proof made in one session checks in that
// session only, and only with the segment's key.
func TestSegmentProof(t *testing.T) {
	i1, r1, err := handshake(t, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		t.Fatal(err)
	}
	i2, _, err := handshake(t, nil, nil, LocalCiphers(), LocalCiphers())
	if err != nil {
		t.Fatal(err)
	}
	if len(i1.Binding()) != 32 || !bytes.Equal(i1.Binding(), r1.Binding()) {
		t.Fatalf("bindings %x and %x: want the same 32 bytes on both ends", i1.Binding(), r1.Binding())
	}
	if bytes.Equal(i1.Binding(), i2.Binding()) {
		t.Fatal("two sessions have the same binding")
	}
	blue, red := Secret{1}, Secret{2}
	proof := SegmentProof(&blue, i1.Binding(), "blue")
	if !CheckSegmentProof(&blue, r1.Binding(), "blue", proof[:]) {
		t.Fatal("the proof does not check on the other end")
	}
	for _, c := range []struct {
		name    string
		psk     *Secret
		binding []byte
		seg     string
	}{
		{"another key", &red, r1.Binding(), "blue"},
		{"another session", &blue, i2.Binding(), "blue"},
		{"another segment", &blue, r1.Binding(), "red"},
	} {
		if CheckSegmentProof(c.psk, c.binding, c.seg, proof[:]) {
			t.Errorf("%s: the proof checks", c.name)
		}
	}
	if CheckSegmentProof(&blue, r1.Binding(), "blue", proof[:8]) {
		t.Error("a truncated proof checks")
	}
	if SegmentID("blue") == SegmentID("red") || SegmentID("blue") != SegmentID("blue") {
		t.Error("segment ids are not a function of the name")
	}
}
