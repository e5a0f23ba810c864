package cab

import (
	"testing"

	"cab/bridgeif"
	"cab/crypto"
)

// TestScratchArena: buffers are cut to their packet (header, frame, room
// for a segment id, tag),
// never overlap, cannot be grown into a neighbour, and after a reset the
// same memory is handed out again without allocating.
func TestScratchArena(t *testing.T) {
	var sc scratch
	sizes := []int{0, 60, 1500, bridgeif.MaxFrame, 64, bridgeif.MaxFrame, 9000, 1}
	var bufs [][]byte
	for _, n := range sizes {
		b := sc.get(n)
		if want := crypto.HeaderLen + n + segTrailer + crypto.TagLen; len(b) != want || cap(b) != want {
			t.Fatalf("get(%d): len %d cap %d, want %d", n, len(b), cap(b), want)
		}
		for i := range b {
			b[i] = byte(len(bufs))
		}
		bufs = append(bufs, b)
	}
	for i, b := range bufs {
		for _, v := range b {
			if v != byte(i) {
				t.Fatalf("buffer %d was overwritten by a later one", i)
			}
		}
	}
	sc.reset()
	allocs := testing.AllocsPerRun(100, func() {
		sc.reset()
		for _, n := range sizes {
			sc.get(n)
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per batch once the arena has grown, want 0", allocs)
	}
	// A broadcast of 64 small frames to 199 peers takes about 1.4 MB,
	// not 199 × 64 jumbo buffers (118 MB).
	var big scratch
	for range 64 * 199 {
		big.get(64)
	}
	if total := len(big.chunks) * scratchChunk; total > 2<<20 {
		t.Errorf("64 × 199 copies of a 64-byte frame took %d bytes of arena", total)
	}
}
