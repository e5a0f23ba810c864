package replay

import "testing"

func TestWindow(t *testing.T) {
	var w Window
	steps := []struct {
		c    uint64
		want bool
	}{
		{0, true}, {0, false}, {1, true}, {5, true}, {3, true}, {3, false}, {2, true},
		{WindowSize + 5, true}, {5, false}, {6, true}, {4, false},
		{WindowSize * 3, true}, {WindowSize*3 - WindowSize + 1, true}, {WindowSize*2 - 1, false},
		{1 << 40, true}, {1<<40 - 1, true}, {1<<40 - WindowSize, false},
		{^uint64(0) - 1, true}, {^uint64(0), false},
	}
	for i, s := range steps {
		if got := w.Check(s.c); got != s.want {
			t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.c, got, s.want)
		}
	}
	// Ring wrap-around: march far, every counter once, in shuffled pairs.
	var w2 Window
	for c := uint64(0); c < 100000; c += 2 {
		if !w2.Check(c+1) || !w2.Check(c) || w2.Check(c) || w2.Check(c+1) {
			t.Fatalf("wrap at %d", c)
		}
	}
}

// FuzzWindow checks the window against a plain set of counters: a counter
// is accepted exactly once, and only within WindowSize of the newest.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{0, 1, 5, 3, 3, 2, 200, 5})
	f.Add([]byte{255, 0, 255, 1})
	f.Fuzz(func(t *testing.T, steps []byte) {
		var w Window
		seen := map[uint64]bool{}
		var newest uint64
		any := false
		var c uint64
		for _, s := range steps {
			// Steps move the counter back or far ahead.
			if s&0x80 != 0 {
				c += uint64(s&0x7f) * 97
			} else if uint64(s) <= c {
				c -= uint64(s)
			}
			want := !seen[c] && (!any || c > newest || newest-c < WindowSize)
			if got := w.Check(c); got != want {
				t.Fatalf("Check(%d) = %v, want %v (newest %d)", c, got, want, newest)
			}
			if want {
				seen[c] = true
				if !any || c > newest {
					newest = c
				}
				any = true
			}
		}
	})
}
