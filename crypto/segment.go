package crypto

import (
	"crypto/hmac"

	"golang.org/x/crypto/blake2s"
)

// SegmentID is the id a segment of that name has on the wire: the first
// four bytes of BLAKE2s-256("cab segment" | name), big endian. Both ends
// compute it from the name alone, so no table of ids has to be agreed; 0
// is the default segment's, and a name whose id would be 0 is refused by
// the configuration.
func SegmentID(name string) uint32 {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("cab segment\x00"))
	h.Write([]byte(name))
	var sum [32]byte
	h.Sum(sum[:0])
	return uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
}

// ProofLen is the length of a segment proof.
const ProofLen = macLen

// SegmentProof proves, within one session, that its sender holds a
// segment's pre-shared key: BLAKE2s-128 keyed with the key, of a label,
// the segment's name and the session's channel binding. It says nothing of
// the key to who sees it, and it is worth nothing in another session.
func SegmentProof(psk *Secret, binding []byte, name string) [ProofLen]byte {
	h, _ := blake2s.New128(psk[:])
	h.Write([]byte("cab segment join\x00"))
	h.Write([]byte{byte(len(name))})
	h.Write([]byte(name))
	h.Write(binding)
	var m [ProofLen]byte
	h.Sum(m[:0])
	return m
}

// CheckSegmentProof reports, in constant time, whether proof is
// SegmentProof(psk, binding, name).
func CheckSegmentProof(psk *Secret, binding []byte, name string, proof []byte) bool {
	want := SegmentProof(psk, binding, name)
	return hmac.Equal(want[:], proof)
}
