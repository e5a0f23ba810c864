//go:build linux && !race

package udp

import "testing"

// TestWriteBatchAllocs: a batch is written without allocating, once the
// conn has warmed up.
func TestWriteBatchAllocs(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, ":0")
	ps := batch(8, 0, to("127.0.0.1", a))
	for i := range ps {
		ps[i].B = ps[i].B[:min(len(ps[i].B), 100)]
	}
	if err := b.WriteBatch(ps); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { b.WriteBatch(ps) }); n != 0 {
		t.Fatalf("WriteBatch: %v allocations", n)
	}
}
