// Package replay is the sliding replay window of RFC 6479: it accepts
// each packet counter once, and counters up to WindowSize behind the
// newest, so that batched and reordered delivery loses nothing while a
// replayed packet is refused.
package replay

// Window geometry: 128 blocks of 64 bits, of which 127 are the window, so
// 8128 counters behind the newest are still accepted once.
const (
	blockBits = 64
	blocks    = 128
	// WindowSize is how far behind the newest counter a packet may arrive
	// and still be accepted (once).
	WindowSize = (blocks - 1) * blockBits
)

// Window is the sliding window. The zero value is ready. It is not safe
// for concurrent use.
type Window struct {
	last uint64 // newest counter seen, plus one; 0 before the first
	ring [blocks]uint64
}

// Check reports whether counter is new and within the window, and marks it
// seen. The largest counter, ^uint64(0), is never accepted.
func (w *Window) Check(counter uint64) bool {
	if counter == ^uint64(0) {
		return false
	}
	counter++ // so that counter 0 is distinct from "nothing seen"
	block := counter / blockBits
	if counter > w.last {
		cur := w.last / blockBits
		diff := min(block-cur, blocks)
		for i := uint64(1); i <= diff; i++ {
			w.ring[(cur+i)%blocks] = 0
		}
		w.last = counter
	} else if w.last-counter >= WindowSize {
		return false
	}
	bit := uint64(1) << (counter % blockBits)
	idx := block % blocks
	if w.ring[idx]&bit != 0 {
		return false
	}
	w.ring[idx] |= bit
	return true
}
