package transport

// A FreeList keeps the buffers of packets a carrier has handled, for the
// next ones, so that a carrier's steady state allocates nothing per
// packet. It is a channel of slices rather than a sync.Pool, whose Put of
// a []byte allocates a slice header each time. It is safe for concurrent
// use.
type FreeList struct {
	ch       chan []byte
	min, max int // the capacities kept: min is also what Get makes
}

// NewFreeList keeps up to n buffers whose capacity is from min to max.
func NewFreeList(n, min, max int) *FreeList {
	return &FreeList{ch: make(chan []byte, n), min: min, max: max}
}

// Get returns an empty buffer of capacity size or more: a kept one when
// it is big enough, else a new one.
func (f *FreeList) Get(size int) []byte {
	select {
	case b := <-f.ch:
		if cap(b) >= size {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, max(size, f.min))
}

// Put gives b back for reuse, unless its capacity is out of the kept range
// or enough are kept already.
func (f *FreeList) Put(b []byte) {
	if cap(b) < f.min || cap(b) > f.max {
		return
	}
	select {
	case f.ch <- b[:0]:
	default:
	}
}
