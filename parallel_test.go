package cab

import (
	"fmt"
	"testing"
)

// TestParallelCryptoKeepsOrder: with crypto workers, bursts of frames
// (batches large enough to be spread over the workers) in both directions
// arrive complete and in the order they were sent, on the fakes and on
// loopback UDP, and the workers did take part.
func TestParallelCryptoKeepsOrder(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(fmt.Sprintf("real=%v", real), func(t *testing.T) {
			server, client := startPair(t, pairOpts{real: real, serverPSK: psk(21), clientPSK: psk(21), workers: 3})
			waitUp(t, client, 1)
			const bursts, per = 20, 64
			send := func(from, to *site, src, dst byte) {
				t.Helper()
				for b := 0; b < bursts; b++ {
					var want [][]byte
					for i := 0; i < per; i++ {
						f := testFrame(dst, src, uint32(b*per+i), 60+(b*per+i)*37%1400)
						want = append(want, f)
						if err := from.port.Inject(f); err != nil {
							t.Fatal(err)
						}
					}
					expectFrames(t, to.port, want)
				}
			}
			send(client, server, 0xaa, 0xbb)
			send(server, client, 0xbb, 0xaa)
			for _, s := range []*site{client, server} {
				if h := s.cable.pool.handed.Load(); h == 0 {
					t.Errorf("no chunk of crypto ran on a worker (drops %v)", s.cable.Status().Drops)
				}
			}
		})
	}
}

// TestCryptoWorkersConfig: no workers when asked for none, and the
// configured number otherwise.
func TestCryptoWorkersConfig(t *testing.T) {
	for _, c := range []struct{ cfg, want int }{{-1, 0}, {2, 2}} {
		if got := (&Config{CryptoWorkers: c.cfg}).cryptoWorkers(); got != c.want {
			t.Errorf("CryptoWorkers %d: %d workers, want %d", c.cfg, got, c.want)
		}
	}
}
