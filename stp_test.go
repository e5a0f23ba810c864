package cab

import (
	"bytes"
	"testing"
	"time"
)

// rstBPDU returns an RST BPDU from MAC 02:..:src with flags, as Open
// vSwitch and the Linux bridge send them.
func rstBPDU(src byte, flags byte) []byte {
	b := []byte{
		0x01, 0x80, 0xc2, 0, 0, 0, 2, 0, 0, 0, 0, src, 0x00, 0x27, // 802.3, length 39
		0x42, 0x42, 0x03, 0x00, 0x00, 0x02, 0x02, flags, // LLC, protocol 0, RSTP, RST BPDU, flags
	}
	b = append(b, make([]byte, 34)...) // root, cost, bridge, port, ages, timers, v1 length
	return append(b, make([]byte, 7)...)
}

// configBPDU and tcnBPDU are the 802.1D (STP) forms.
func configBPDU(flags byte) []byte {
	b := rstBPDU(0x20, flags)
	b[19], b[20] = 0x00, 0x00 // STP, configuration BPDU
	return b
}

func tcnBPDU() []byte {
	b := rstBPDU(0x20, 0)[:21+3]
	b[19], b[20] = 0x00, 0x80
	return b
}

func TestBPDUTopologyChange(t *testing.T) {
	short := rstBPDU(1, 0x01)[:21] // cut before the flags
	ethertype := rstBPDU(1, 0x01)
	ethertype[12], ethertype[13] = 0x88, 0xcc // LLDP's EtherType, not a length
	notSTP := rstBPDU(1, 0x01)
	notSTP[14] = 0xaa // SNAP, not the spanning-tree SAP
	proto := rstBPDU(1, 0x01)
	proto[18] = 1 // protocol identifier must be 0
	for name, c := range map[string]struct {
		frame []byte
		want  bool
	}{
		"rst with tc":         {rstBPDU(1, 0x3d), true},
		"rst without tc":      {rstBPDU(1, 0x3c), false},
		"stp config with tc":  {configBPDU(0x01), true},
		"stp config tc ack":   {configBPDU(0x80), false},
		"stp tcn":             {tcnBPDU(), true},
		"cut before flags":    {short, false},
		"ethertype":           {ethertype, false},
		"other llc":           {notSTP, false},
		"protocol id":         {proto, false},
		"header only":         {rstBPDU(1, 1)[:14], false},
		"empty":               {nil, false},
		"unknown bpdu type":   {append(rstBPDU(1, 1)[:20], 0x07, 0x01), false},
		"mst (type 2, v3) tc": {func() []byte { b := rstBPDU(1, 0x01); b[19] = 3; return b }(), true},
	} {
		if got := bpduTopologyChange(c.frame); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// FuzzBPDUTopologyChange: any frame is looked at without a panic, and only
// a spanning-tree LLC frame can announce a change.
func FuzzBPDUTopologyChange(f *testing.F) {
	for _, s := range [][]byte{rstBPDU(1, 0x3d), rstBPDU(1, 0x3c), configBPDU(1), tcnBPDU(), {}, make([]byte, 21), rstBPDU(1, 1)[:22]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if bpduTopologyChange(frame) && (len(frame) < 21 || !bytes.Equal(frame[14:19], []byte{0x42, 0x42, 0x03, 0, 0})) {
			t.Fatalf("% x: a topology change without a spanning-tree header", frame)
		}
	})
}

// TestSwitchTopologyChangeFlushes: a BPDU with the TC flag, from a client
// or from the local port, makes a hub forget its MACs (so frames flood to
// where the tree now sends them); one without it, or in isolate mode or
// with BPDUs dropped, does not.
func TestSwitchTopologyChangeFlushes(t *testing.T) {
	for _, c := range []struct {
		name   string
		mod    func(*Config)
		bpdu   []byte
		local  bool
		flush  bool
		passes bool
	}{
		{"tc from a client", nil, rstBPDU(mac(0), 0x3d), false, true, true},
		{"tcn from a client", nil, tcnBPDU(), false, true, true},
		{"tc from the port", nil, rstBPDU(0xee, 0x3d), true, true, true},
		{"no tc", nil, rstBPDU(mac(0), 0x3c), false, false, true},
		{"isolate", func(c *Config) { c.Isolate = true }, rstBPDU(mac(0), 0x3d), false, false, true},
		{"bpdu dropped", func(c *Config) { c.DropBPDU = true }, rstBPDU(mac(0), 0x3d), false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := startHub(t, 2, c.mod)
			for i := range h.clients {
				h.announce(t, i)
			}
			time.Sleep(50 * time.Millisecond)
			for _, cl := range h.clients {
				drain(cl)
			}
			local := testFrame(0xff, 0xee, 0, 64)
			copy(local[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			h.server.port.Inject(local)
			expectFrames(t, h.clients[0].port, [][]byte{local})
			drain(h.server)
			if n := h.server.cable.def.fdb.len(); n < 3 {
				t.Fatalf("%d MACs learned, want 3", n)
			}
			if c.local {
				h.server.port.Inject(c.bpdu)
				if c.passes {
					expectFrames(t, h.clients[0].port, [][]byte{c.bpdu})
				}
			} else {
				h.clients[0].port.Inject(c.bpdu)
				if c.passes {
					expectFrames(t, h.server.port, [][]byte{c.bpdu})
				}
			}
			time.Sleep(50 * time.Millisecond)
			n, flushes := h.server.cable.def.fdb.len(), h.server.cable.Status().FDBFlushes
			// After a flush only the BPDU's sender is known again.
			if c.flush && (n != 1 || flushes != 1) {
				t.Errorf("after a topology change: %d MACs, %d flushes; want 1 (the BPDU's sender) and 1", n, flushes)
			}
			if !c.flush && (n < 3 || flushes != 0) {
				t.Errorf("%d MACs, %d flushes; want 3 and none", n, flushes)
			}
			if c.flush {
				// A second announcement at once (RSTP repeats TC for
				// seconds) does not flush again.
				h.announce(t, 1)
				h.clients[0].port.Inject(c.bpdu)
				time.Sleep(50 * time.Millisecond)
				if f := h.server.cable.Status().FDBFlushes; f != 1 {
					t.Errorf("%d flushes after two announcements in 50 ms, want 1", f)
				}
			}
		})
	}
}
