package quic

import (
	"testing"
	"time"
)

// TestQueueAllocs: queueing a packet and sending it from the queue
// allocates nothing once a buffer is in circulation: cab's side of the
// QUIC carrier makes no garbage per packet (quic-go's datagram API copies
// each datagram on its own).
func TestQueueAllocs(t *testing.T) {
	q := newDropQueue(4)
	p := make([]byte, 1200)
	sent := 0
	send := func(b []byte) error { sent += len(b); return nil }
	putBuf(make([]byte, 0, MaxPacket))
	allocs := testing.AllocsPerRun(1000, func() {
		now := time.Now().UnixNano()
		if !q.put(p, now) {
			t.Fatal("the queue is full")
		}
		b := <-q.ch // what drain does with each packet
		if err := send(b.b); err != nil {
			t.Fatal(err)
		}
		putBuf(b.b)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per packet, want 0", allocs)
	}
	if sent != 1001*len(p) {
		t.Errorf("sent %d bytes, want %d", sent, 1001*len(p))
	}
}
