package quic

import (
	"testing"
	"time"

	"cab/transport"
)

// BenchmarkClientToServer sends 1200-byte packets from a client to a
// server over loopback, 32 per WriteBatch, as the cable would; it reports
// what arrived.
func BenchmarkClientToServer(b *testing.B) {
	s, err := Listen("127.0.0.1:0", ServerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, err := Dial(s.Addr().String(), ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	got := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		ps := make([]transport.Packet, 64)
		for i := range ps {
			ps[i].B = make([]byte, 0, 2048)
		}
		n := 0
		for {
			k, err := s.ReadBatch(ps)
			if err != nil {
				got <- n
				return
			}
			n += k
			select {
			case <-stop:
				got <- n
				return
			default:
			}
		}
	}()
	batch := make([]transport.Packet, 32)
	for i := range batch {
		batch[i] = transport.Packet{B: make([]byte, 1200), Addr: c.Remote()}
	}
	c.WriteBatch(batch[:1])
	time.Sleep(100 * time.Millisecond)
	b.SetBytes(1200 * 32)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c.WriteBatch(batch)
		for c.e.queue.len() > queuePackets/2 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	c.WriteBatch(batch[:1]) // wakes the reader to see stop
	n := <-got
	el := time.Since(start)
	b.ReportMetric(float64(n)*1200*8/el.Seconds()/1e6, "Mbit/s-received")
	b.ReportMetric(float64(c.Stats().Stale+c.Stats().QueueFull), "dropped")
}
