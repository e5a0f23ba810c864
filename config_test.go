package cab

import (
	"strings"
	"testing"
)

// TestValidateNonCanonicalPeer: a peer key with bit 255 set is the same
// point as a canonical key; the configuration refuses it.
func TestValidateNonCanonicalPeer(t *testing.T) {
	k := mustKey(t).Public()
	cfg := Config{PrivateKey: mustKey(t), Responder: true, Peers: []PeerConfig{{Name: "a", PublicKey: k}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	k[31] |= 0x80
	cfg.Peers[0].PublicKey = k
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "not canonical") {
		t.Fatalf("Validate with a non-canonical peer key: %v", err)
	}
}
