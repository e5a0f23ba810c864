package cab

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Crypto spread over cores. A loop (the port loop, each conn loop) does its
// per-frame work inline, in order, but defers the AEAD work of a batch: the
// seals of what it sends and the opens of what it received. When a batch is
// large enough and there are workers, the AEAD work is cut into chunks that
// run on the workers and the loop itself at once; the loop then finishes the
// batch in its original order. Packets go out, and frames reach the port,
// in the order they came in, per peer and overall.

// parallelMin is the smallest batch whose crypto is worth spreading: below
// it, waking a worker costs more than the work it would take.
const parallelMin = 16

// cryptoChunk is one piece of a batch's crypto, run by a worker or by the
// loop itself.
type cryptoChunk struct {
	seals []sealJob
	opens []openJob
	wg    *sync.WaitGroup
}

func (k *cryptoChunk) run() {
	for i := range k.seals {
		k.seals[i].run()
	}
	for i := range k.opens {
		k.opens[i].run()
	}
}

// cryptoPool is the cable's crypto workers. A nil pool (or one with no
// workers) runs everything on the calling loop.
type cryptoPool struct {
	work    chan *cryptoChunk
	workers int
	handed  atomic.Uint64 // chunks run by a worker, not by the loop
}

// defaultCryptoWorkers is how many workers a cable starts when the
// configuration does not say: one fewer than the cores, as the loop that
// hands out the work also does a share, and none on a machine with fewer
// than four cores, where the other loops, the kernel and the traffic's own
// programs keep the cores busy and a worker's wake-up costs more than it
// saves (the side-by-side harness measures both).
func defaultCryptoWorkers() int {
	n := runtime.GOMAXPROCS(0)
	if n < 4 {
		return 0
	}
	return n - 1
}

// newCryptoPool starts n workers; they end when stop is called.
func newCryptoPool(n int) *cryptoPool {
	p := &cryptoPool{workers: n}
	if n <= 0 {
		return p
	}
	p.work = make(chan *cryptoChunk, 4*n)
	for i := 0; i < n; i++ {
		go func() {
			for k := range p.work {
				k.run()
				p.handed.Add(1)
				k.wg.Done()
			}
		}()
	}
	return p
}

func (p *cryptoPool) stop() {
	if p != nil && p.work != nil {
		close(p.work)
	}
}

// cryptoBatch is a loop's deferred crypto and the chunks it is cut into;
// it is owned by one loop and reused, so it allocates nothing in the steady
// state.
type cryptoBatch struct {
	seals  []sealJob
	opens  []openJob
	chunks []cryptoChunk
	wg     sync.WaitGroup
}

// run does the batch's deferred seals and opens, spread over pool's
// workers when the batch is large enough.
func (b *cryptoBatch) run(pool *cryptoPool) {
	n := len(b.seals) + len(b.opens)
	if n == 0 {
		return
	}
	parts := 1
	if pool != nil && pool.workers > 0 && n >= parallelMin {
		parts = min(pool.workers+1, n/(parallelMin/2))
	}
	if parts <= 1 {
		k := cryptoChunk{seals: b.seals, opens: b.opens}
		k.run()
		return
	}
	if cap(b.chunks) < parts {
		b.chunks = make([]cryptoChunk, parts)
	}
	b.chunks = b.chunks[:parts]
	// Cut seals and opens alike into parts pieces of about equal size.
	for i := range b.chunks {
		s0, s1 := len(b.seals)*i/parts, len(b.seals)*(i+1)/parts
		o0, o1 := len(b.opens)*i/parts, len(b.opens)*(i+1)/parts
		b.chunks[i] = cryptoChunk{seals: b.seals[s0:s1], opens: b.opens[o0:o1], wg: &b.wg}
	}
	for i := 1; i < parts; i++ {
		b.wg.Add(1)
		select {
		case pool.work <- &b.chunks[i]:
		default: // the workers are behind: do it here
			b.chunks[i].run()
			b.wg.Done()
		}
	}
	b.chunks[0].run()
	b.wg.Wait()
}

// sealJob is one deferred seal: the frame at buf[HeaderLen:HeaderLen+size]
// for peer p's session s, to go out on path pt.
type sealJob struct {
	p     *peer
	s     *session
	pt    *path
	typ   byte
	flags byte
	buf   []byte
	size  int
	pkt   []byte // the packet, once sealed
	err   error
}

func (j *sealJob) run() {
	j.pkt, j.err = j.s.SealFlags(j.typ, j.flags, j.buf, j.size)
}

// openJob is one deferred open of the packet ps[i] of a conn loop's batch
// with session s.
type openJob struct {
	i     int
	s     *session
	pkt   []byte
	frame []byte // the plaintext, once opened
	err   error
}

func (j *openJob) run() {
	j.frame, j.err = j.s.Open(j.pkt)
}
