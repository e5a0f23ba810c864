package cab

import (
	"sync"
	"testing"
	"time"
)

func key(b byte, vlan uint16) macKey { return macKey{mac: [6]byte{2, 0, 0, 0, 0, b}, vlan: vlan} }

func TestFDBLearnLookupMove(t *testing.T) {
	f := newFDB(2, false)
	p1, p2 := testPeer("p1"), testPeer("p2")
	now := time.Now().UnixNano()
	if _, ok := f.lookup(key(1, 0)); ok {
		t.Fatal("empty fdb knows a MAC")
	}
	f.learn(key(1, 0), p1, now)
	f.learn(key(2, 0), nil, now)
	if p, ok := f.lookup(key(1, 0)); !ok || p != p1 {
		t.Fatalf("lookup 1: %v %v", p, ok)
	}
	if p, ok := f.lookup(key(2, 0)); !ok || p != nil {
		t.Fatalf("lookup local: %v %v", p, ok)
	}
	if _, ok := f.lookup(key(1, 7)); ok {
		t.Fatal("same MAC on another VLAN found")
	}
	// Moving: MAC 1 shows up behind p2.
	f.learn(key(1, 0), p2, now)
	if p, _ := f.lookup(key(1, 0)); p != p2 {
		t.Fatal("moved MAC not relearned")
	}
	if f.macsOf(p1) != 0 || f.macsOf(p2) != 1 {
		t.Fatalf("counts p1=%d p2=%d", f.macsOf(p1), f.macsOf(p2))
	}
	// The cap: p2 may hold 2 MACs.
	if f.learn(key(3, 0), p2, now) != learned || f.learn(key(4, 0), p2, now) != overCap {
		t.Fatal("cap of 2 not enforced")
	}
	// Group addresses are never learned and never found.
	g := macKey{mac: [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	f.learn(g, p1, now)
	if _, ok := f.lookup(g); ok {
		t.Fatal("broadcast found in fdb")
	}
	f.forget(p2)
	if _, ok := f.lookup(key(1, 0)); ok || f.macsOf(p2) != 0 {
		t.Fatal("forget left entries")
	}
}

func TestFDBSticky(t *testing.T) {
	f := newFDB(10, true)
	victim, forger := &peer{}, &peer{}
	f.learn(key(1, 0), victim, 100)
	f.learn(key(2, 0), nil, 100)
	if f.learn(key(1, 0), forger, 150) != conflict || f.learn(key(2, 0), forger, 150) != conflict {
		t.Fatal("sticky fdb let a peer claim another's MAC")
	}
	if p, _ := f.lookup(key(1, 0)); p != victim {
		t.Fatal("victim's MAC moved")
	}
	f.forget(victim) // the victim goes down: its MACs are free again
	if f.learn(key(1, 0), forger, 200) != learned {
		t.Fatal("freed MAC not learnable")
	}
	f.age(200, 100) // now 300, aging 100: a local MAC stays for twice that
	if f.learn(key(2, 0), forger, 300) != conflict {
		t.Fatal("a client claimed a local MAC used within the aging time")
	}
	f.age(400, 100) // now 500
	if f.learn(key(2, 0), forger, 500) != learned {
		t.Fatal("aged MAC not learnable")
	}
	// The local side speaks again: it takes its MAC back, and the
	// client is counted.
	var reclaimed *peer
	f.onReclaim = func(p *peer) { reclaimed = p }
	if f.learn(key(2, 0), nil, 600) != learned || reclaimed != forger {
		t.Fatal("the local side did not take its MAC back from a client")
	}
	if p, ok := f.lookup(key(2, 0)); !ok || p != nil {
		t.Fatal("the local MAC still points at the client")
	}
}

func TestFDBAging(t *testing.T) {
	f := newFDB(10, false)
	p := &peer{}
	f.learn(key(1, 0), p, 100)
	f.learn(key(2, 0), p, 200)
	f.age(150, 50)
	if _, ok := f.lookup(key(1, 0)); ok {
		t.Fatal("old entry survived aging")
	}
	if _, ok := f.lookup(key(2, 0)); !ok {
		t.Fatal("fresh entry aged out")
	}
	if f.macsOf(p) != 1 {
		t.Fatalf("macs = %d", f.macsOf(p))
	}
}

func TestFrameKeysVLAN(t *testing.T) {
	fr := testFrame(1, 2, 0, 64)
	fr[12], fr[13], fr[14], fr[15] = 0x81, 0x00, 0x20, 0x0a // VLAN 10, PCP 1
	dst, src := frameKeys(fr)
	if dst.vlan != 10 || src.vlan != 10 || dst.mac[5] != 1 || src.mac[5] != 2 {
		t.Fatalf("dst %+v src %+v", dst, src)
	}
}

func TestFDBConcurrent(t *testing.T) {
	f := newFDB(1<<20, false)
	peers := []*peer{{}, {}, {}, {}}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				k := key(byte(i), uint16(g))
				f.learn(k, peers[g], int64(i))
				if p, ok := f.lookup(k); !ok || p != peers[g] {
					t.Errorf("lookup after learn: %v %v", p, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
	if f.len() != 4*256 {
		t.Fatalf("len %d, want %d", f.len(), 4*256)
	}
}

func BenchmarkFDBLookup(b *testing.B) {
	f := newFDB(1<<20, false)
	p := &peer{}
	for i := 0; i < 1000; i++ {
		f.learn(key(byte(i), uint16(i>>8)), p, 1)
	}
	k := key(42, 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.lookup(k)
			f.learn(k, p, 2)
		}
	})
}

type testAddr string

func (a testAddr) String() string { return string(a) }

// testPeer is a bare peer named name.
func testPeer(name string) *peer {
	p := &peer{}
	p.nm.Store(&name)
	return p
}
