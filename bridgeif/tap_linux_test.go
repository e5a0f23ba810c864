package bridgeif

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of tap_linux.go. Every root test runs its TAPs in a network
// namespace of its own and uses addresses from 192.0.2.0/24 only.

// needRoot skips a test that needs root, loudly, except in CI, where the
// test fails instead: CI runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (TAP devices, network namespaces), and CI runs as root")
	}
	t.Skip("SKIPPED: needs root for TAP devices and network namespaces; run the tests as root (make test)")
}

// netns makes a network namespace for the test and deletes it afterwards.
func netns(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "cabtest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// quietNetns is netns without IPv6, so that the only frames a TAP in it
// carries are the ones the test makes.
func quietNetns(t testing.TB) string {
	t.Helper()
	ns := netns(t)
	inNetns(t, ns, func() {
		for _, c := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c+"/disable_ipv6", []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
		}
	})
	return ns
}

// inNetns runs f with the calling thread in namespace ns.
func inNetns(t testing.TB, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the original network namespace: " + err.Error())
		}
	}()
	f()
}

// withoutNetAdmin runs f on an OS thread of its own, in namespace ns, without
// CAP_NET_ADMIN. The thread is never reused: its goroutine exits locked to
// it, and the runtime ends it.
func withoutNetAdmin(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked
		done <- func() error {
			target, err := os.Open("/var/run/netns/" + ns)
			if err != nil {
				return err
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return err
			}
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			bit := uint32(1) << unix.CAP_NET_ADMIN
			data[0].Effective &^= bit
			data[0].Permitted &^= bit
			data[0].Inheritable &^= bit
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				return err
			}
			f()
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	return string(out)
}

func openIn(t *testing.T, ns, name string) *TAP {
	t.Helper()
	var tap *TAP
	var err error
	inNetns(t, ns, func() { tap, err = OpenTAP(name) })
	if err != nil {
		t.Fatal(err)
	}
	return tap
}

// linkInfo is what `ip -j link show` says about a device.
type linkInfo struct {
	Index   int      `json:"ifindex"`
	Flags   []string `json:"flags"`
	MTU     int      `json:"mtu"`
	Address string   `json:"address"`
}

// link returns what ip says about dev in ns, and false when it does not exist.
func link(t *testing.T, ns, dev string) (linkInfo, bool) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-j", "link", "show", "dev", dev).Output()
	if err != nil {
		return linkInfo{}, false
	}
	var ls []linkInfo
	if err := json.Unmarshal(out, &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip link show %s: %v: %s", dev, err, out)
	}
	return ls[0], true
}

// qdiscSent returns how many frames the queueing discipline of dev in ns
// has handed to the device: for a TAP, how many it has queued for reading.
func qdiscSent(t *testing.T, ns, dev string) int {
	t.Helper()
	out, err := exec.Command("tc", "-n", ns, "-j", "-s", "qdisc", "show", "dev", dev).Output()
	var qs []struct {
		Packets int `json:"packets"`
	}
	if err != nil || json.Unmarshal(out, &qs) != nil || len(qs) == 0 {
		t.Fatalf("tc qdisc show dev %s: %v: %s", dev, err, out)
	}
	return qs[0].Packets
}

func (l linkInfo) up() bool {
	for _, f := range l.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}

// waitGone waits, boundedly, for dev to disappear from ns.
func waitGone(t *testing.T, ns, dev string) bool {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, ok := link(t, ns, dev); !ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// udpTo returns a UDP socket in ns connected to dst:9, closed with the test.
func udpTo(t *testing.T, ns string, dst [4]byte) int {
	t.Helper()
	var fd int
	var err error
	inNetns(t, ns, func() {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		if err = unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: dst}); err != nil {
			unix.Close(fd)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// watchdog closes tap after d, so that a test waiting for a frame that never
// comes ends with net.ErrClosed instead of hanging. Stop it when done.
func watchdog(tap *TAP, d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() { tap.Close() })
}

func makeBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

var (
	macB = net.HardwareAddr{2, 0, 0, 0, 0, 2} // 192.0.2.2, a neighbour that exists only in frames
	ipA  = [4]byte{192, 0, 2, 1}              // the TAP's address
	ipB  = [4]byte{192, 0, 2, 2}
)

func TestTAPOpenCreatesUpDevice(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt0")
	defer tap.Close()
	if !tap.Created() || tap.Name() != "cabt0" {
		t.Fatalf("created=%v name=%q", tap.Created(), tap.Name())
	}
	l, ok := link(t, ns, "cabt0")
	if !ok || !l.up() {
		t.Fatalf("TAP missing or not up: %+v", l)
	}
	if hw, err := tap.HardwareAddr(); err != nil || hw.String() != l.Address {
		t.Fatalf("HardwareAddr %v %v; ip says %s", hw, err, l.Address)
	}
	want := net.HardwareAddr{0x02, 0xca, 0xb0, 0, 0, 1}
	if err := tap.SetHardwareAddr(want); err != nil {
		t.Fatal(err)
	}
	if hw, err := tap.HardwareAddr(); err != nil || hw.String() != want.String() {
		t.Fatalf("MAC after SetHardwareAddr: %v %v", hw, err)
	}
	if l, _ := link(t, ns, "cabt0"); l.Address != want.String() {
		t.Fatalf("ip says MAC %s after SetHardwareAddr(%s)", l.Address, want)
	}
	if err := tap.SetHardwareAddr(net.HardwareAddr{1, 0, 0, 0, 0, 1}); err == nil {
		t.Fatal("a multicast MAC was accepted")
	}
	for _, mtu := range []int{1400, 9000, 1500} {
		if err := tap.SetMTU(mtu); err != nil {
			t.Fatal(err)
		}
		if m, err := tap.MTU(); err != nil || m != mtu {
			t.Fatalf("MTU %d %v after SetMTU(%d)", m, err, mtu)
		}
		if l, _ := link(t, ns, "cabt0"); l.MTU != mtu {
			t.Fatalf("ip says mtu %d after SetMTU(%d)", l.MTU, mtu)
		}
	}
	for _, bad := range []int{0, -1, 67, 1 << 20} {
		if err := tap.SetMTU(bad); err == nil || !strings.Contains(err.Error(), `tap "cabt0"`) {
			t.Errorf("SetMTU(%d): %v", bad, err)
		}
	}
	if m, _ := tap.MTU(); m != 1500 {
		t.Fatalf("a refused SetMTU changed the MTU to %d", m)
	}
	// Buffers: none is no frame; a first buffer without room is an error.
	if n, err := tap.ReadBatch(nil, nil, 0); n != 0 || err != nil {
		t.Fatalf("ReadBatch(nil): %d %v", n, err)
	}
	bufs, sizes := makeBufs(1, 29)
	if _, err := tap.ReadBatch(bufs, sizes, 16); err == nil {
		t.Fatal("ReadBatch with 13 bytes of room did not fail")
	}
	// Runts, and buffers shorter than the offset, are dropped without error.
	if n, err := tap.WriteBatch([][]byte{make([]byte, 16+13), make([]byte, 3)}, 16); n != 2 || err != nil {
		t.Fatalf("WriteBatch of runts: %d %v", n, err)
	}
}

func TestTAPReadsARPAndWritesReply(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt1")
	defer tap.Close()
	macA, err := tap.HardwareAddr()
	if err != nil {
		t.Fatal(err)
	}
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "cabt1")
	// A datagram to a neighbour the kernel does not know makes it ARP for
	// 192.0.2.2 through the TAP, and hold the datagram until it has a reply.
	sock := udpTo(t, ns, ipB)
	if _, err := unix.Write(sock, []byte("held until ARP is answered")); err != nil {
		t.Fatal(err)
	}
	const off = 16
	bufs, sizes := makeBufs(4, off+1600)
	wd := watchdog(tap, 10*time.Second)
	defer wd.Stop()
	var req []byte
	for i := 0; i < 20 && req == nil; i++ {
		n, err := tap.ReadBatch(bufs, sizes, off)
		if err != nil {
			t.Fatalf("no ARP request read from the TAP: %v", err)
		}
		for j := range n {
			if f := bufs[j][off : off+sizes[j]]; binary.BigEndian.Uint16(f[12:]) == 0x0806 {
				req = append([]byte(nil), f...)
			}
		}
	}
	if req == nil {
		t.Fatal("no ARP request among 20 batches")
	}
	if len(req) < 42 || !isBroadcast(req[0:6]) || !bytesEq(req[6:12], macA) ||
		binary.BigEndian.Uint16(req[20:]) != 1 || !bytesEq(req[22:28], macA) ||
		!bytesEq(req[28:32], ipA[:]) || !bytesEq(req[38:42], ipB[:]) {
		t.Fatalf("not an ARP request from %v for 192.0.2.2: % x", macA, req)
	}

	// Answer it: 192.0.2.2 is at macB. The kernel learns that and sends the
	// held datagram there.
	reply := make([]byte, off+42)
	f := reply[off:]
	copy(f[0:6], macA)
	copy(f[6:12], macB)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 2})
	copy(f[22:28], macB)
	copy(f[28:32], ipB[:])
	copy(f[32:38], macA)
	copy(f[38:42], ipA[:])
	if n, err := tap.WriteBatch([][]byte{reply}, off); n != 1 || err != nil {
		t.Fatalf("WriteBatch: %d %v", n, err)
	}
	var held []byte
	for i := 0; i < 20 && held == nil; i++ {
		n, err := tap.ReadBatch(bufs, sizes, off)
		if err != nil {
			t.Fatalf("the held datagram never came: %v", err)
		}
		for j := range n {
			if f := bufs[j][off : off+sizes[j]]; binary.BigEndian.Uint16(f[12:]) == 0x0800 {
				held = append([]byte(nil), f...)
			}
		}
	}
	if held == nil || !bytesEq(held[0:6], macB) || !strings.HasSuffix(string(held), "held until ARP is answered") {
		t.Fatalf("the held datagram did not go to %v: % x", macB, held)
	}
	if out := ipOut(t, "-n", ns, "neigh", "show", "192.0.2.2"); !strings.Contains(out, macB.String()) {
		t.Fatalf("the kernel did not learn the MAC from the ARP reply: %s", out)
	}
}

func isBroadcast(b []byte) bool { return bytesEq(b, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) }
func bytesEq(a, b []byte) bool  { return string(a) == string(b) }

// A frame of exactly the room in a buffer is read; one byte more is
// dropped, not truncated; queued frames come in one batch; the headroom is
// left alone.
func TestTAPReadBatchQueuedAndOversize(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt2")
	defer tap.Close()
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "cabt2")
	ipOut(t, "-n", ns, "neigh", "add", "192.0.2.2", "lladdr", macB.String(), "dev", "cabt2", "nud", "permanent")
	before := qdiscSent(t, ns, "cabt2")
	const off, room, hdrs = 16, 186, 14 + 20 + 8
	sock := udpTo(t, ns, ipB)
	for _, d := range []struct {
		mark byte
		size int
	}{{'E', room}, {'O', room + 1}, {'S', hdrs + 10}} {
		p := make([]byte, d.size-hdrs)
		for i := range p {
			p[i] = d.mark
		}
		if _, err := unix.Write(sock, p); err != nil {
			t.Fatal(err)
		}
	}
	// All three are in the TAP's queue before the first read.
	for i := 0; qdiscSent(t, ns, "cabt2")-before < 3; i++ {
		if i == 100 {
			t.Fatalf("the kernel sent %d of 3 frames", qdiscSent(t, ns, "cabt2")-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	bufs, sizes := makeBufs(8, off+room)
	for _, b := range bufs {
		for i := range off {
			b[i] = 0xee
		}
	}
	wd := watchdog(tap, 10*time.Second)
	defer wd.Stop()
	n, err := tap.ReadBatch(bufs, sizes, off)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("read %d frames in one batch, want 2 (the exact fit and the small one)", n)
	}
	for i, want := range []struct {
		mark byte
		size int
	}{{'E', room}, {'S', hdrs + 10}} {
		f := bufs[i][off : off+sizes[i]]
		if sizes[i] != want.size || f[hdrs] != want.mark || f[len(f)-1] != want.mark {
			t.Errorf("frame %d: %d bytes marked %q, want %d marked %q", i, sizes[i], f[hdrs], want.size, want.mark)
		}
		if !bytesEq(f[0:6], macB) || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
			t.Errorf("frame %d is not the IPv4 datagram to %v: % x", i, macB, f[:14])
		}
	}
	for i, b := range bufs {
		for j := range off {
			if b[j] != 0xee {
				t.Fatalf("buffer %d: headroom byte %d overwritten", i, j)
			}
		}
	}
}

func TestTAPReadWriteAllocateNothing(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt3")
	defer tap.Close()
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "cabt3")
	ipOut(t, "-n", ns, "neigh", "add", "192.0.2.2", "lladdr", macB.String(), "dev", "cabt3", "nud", "permanent")
	sock := udpTo(t, ns, ipB)
	payload := make([]byte, 100)
	// A frame for another host: the kernel takes it and drops it.
	out := make([]byte, 16+60)
	copy(out[16:], []byte{2, 0, 0, 0, 0, 0x99, 2, 0, 0, 0, 0, 0x98, 0x88, 0xb5})
	bufs, sizes := makeBufs(4, 16+1600)
	wd := watchdog(tap, 20*time.Second)
	defer wd.Stop()
	var got, wrote int
	var ioErr error
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := unix.Write(sock, payload); err != nil {
			ioErr = err
			return
		}
		n, err := tap.ReadBatch(bufs, sizes, 16)
		if err != nil {
			ioErr = err
			return
		}
		got += n
		n, err = tap.WriteBatch([][]byte{out}, 16)
		if err != nil {
			ioErr = err
		}
		wrote += n
	})
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	if got != 201 || wrote != 201 {
		t.Fatalf("read %d and wrote %d frames, want 201 each", got, wrote)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per read and write, want 0", allocs)
	}
}

func TestTAPCloseUnblocksReadAndRemovesCreated(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt4")
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(2, 2048)
		for i := 0; i < 1000; i++ {
			if _, err := tap.ReadBatch(bufs, sizes, 0); err != nil {
				errc <- err
				return
			}
		}
		errc <- errors.New("1000 batches read from a quiet TAP")
	}()
	time.Sleep(100 * time.Millisecond) // let the reader block
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	bufs, sizes := makeBufs(1, 100)
	if _, err := tap.ReadBatch(bufs, sizes, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if _, err := tap.WriteBatch([][]byte{make([]byte, 60)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if _, err := tap.MTU(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("MTU after Close: %v", err)
	}
	if err := tap.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if !waitGone(t, ns, "cabt4") {
		t.Fatal("a TAP cab created survived Close")
	}
}

func TestTAPPersistentIsAttachedAndSurvives(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	ipOut(t, "-n", ns, "tuntap", "add", "dev", "cabp0", "mode", "tap")
	before, _ := link(t, ns, "cabp0")
	if before.up() {
		t.Fatal("a fresh persistent TAP is up already")
	}
	for range 2 { // and again: Close left it free to attach
		tap := openIn(t, ns, "cabp0")
		if tap.Created() {
			t.Fatal("an existing TAP was reported as created")
		}
		if l, _ := link(t, ns, "cabp0"); l.Index != before.Index || !l.up() {
			t.Fatalf("after OpenTAP: %+v, before: %+v", l, before)
		}
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		if l, ok := link(t, ns, "cabp0"); !ok || l.Index != before.Index {
			t.Fatalf("the persistent TAP did not survive Close: %+v %v", l, ok)
		}
	}
}

func TestTAPBusy(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabb0")
	defer tap.Close()
	var err error
	inNetns(t, ns, func() { _, err = OpenTAP("cabb0") })
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("opening a TAP in use: %v", err)
	}
	if _, err := tap.MTU(); err != nil {
		t.Fatalf("the first TAP suffered from the second open: %v", err)
	}
}

func TestTAPNotATAP(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	ipOut(t, "-n", ns, "link", "add", "cabv0", "type", "veth", "peer", "name", "cabv1")
	ipOut(t, "-n", ns, "tuntap", "add", "dev", "cabu0", "mode", "tun")
	for _, name := range []string{"cabv0", "cabu0"} {
		var err error
		inNetns(t, ns, func() { _, err = OpenTAP(name) })
		if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "not a single-queue TAP") {
			t.Errorf("opening %s as a TAP: %v", name, err)
		}
		if _, ok := link(t, ns, name); !ok {
			t.Errorf("%s vanished", name)
		}
	}
}

func TestTAPDeviceDeleted(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabd0")
	defer tap.Close()
	ipOut(t, "-n", ns, "link", "del", "cabd0")
	wd := watchdog(tap, 10*time.Second)
	defer wd.Stop()
	bufs, sizes := makeBufs(1, 100)
	_, err := tap.ReadBatch(bufs, sizes, 0)
	if errors.Is(err, net.ErrClosed) || !errors.Is(err, unix.EBADFD) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("read from a deleted TAP: %v", err)
	}
	_, err = tap.WriteBatch([][]byte{make([]byte, 60)}, 0)
	if !errors.Is(err, unix.EBADFD) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("write to a deleted TAP: %v", err)
	}
}

func TestTAPNotPermitted(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	var err error
	withoutNetAdmin(t, ns, func() { _, err = OpenTAP("cabn0") })
	if !errors.Is(err, os.ErrPermission) {
		t.Fatalf("creating a TAP without CAP_NET_ADMIN: %v", err)
	}
	const want = `open tap "cabn0": operation not permitted: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep /`
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q\ndoes not start with %q", err, want)
	}
	if _, ok := link(t, ns, "cabn0"); ok {
		t.Fatal("a refused OpenTAP left a device behind")
	}

	// A persistent TAP of our own user is attached without the capability;
	// bringing it up needs it, unless it is up already.
	ipOut(t, "-n", ns, "tuntap", "add", "dev", "cabo0", "mode", "tap", "user", "0")
	withoutNetAdmin(t, ns, func() { _, err = OpenTAP("cabo0") })
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "ip link set cabo0 up") {
		t.Fatalf("attaching to a TAP that is down, without CAP_NET_ADMIN: %v", err)
	}
	ipOut(t, "-n", ns, "link", "set", "cabo0", "up")
	var tap *TAP
	withoutNetAdmin(t, ns, func() { tap, err = OpenTAP("cabo0") })
	if err != nil {
		t.Fatalf("attaching to a TAP that is up, without CAP_NET_ADMIN: %v", err)
	}
	if tap.Created() {
		t.Fatal("an existing TAP was reported as created")
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTAPNameErrors(t *testing.T) {
	for name, want := range map[string]string{
		"":                       "empty",
		"0123456789abcdef":       "too long",
		"cab0/x":                 "invalid",
		"cab0:1":                 "invalid",
		"cab 0":                  "invalid",
		"cab\t0":                 "invalid",
		"cab\x000":               "invalid",
		".":                      "invalid",
		"..":                     "invalid",
		"\xa0":                   "invalid",
		strings.Repeat("x", 300): "too long",
	} {
		_, err := OpenTAP(name)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "open tap ") {
			t.Errorf("OpenTAP(%q): %v, want an error saying %q", name, err, want)
		}
	}
	for _, name := range []string{"c", "cab0", "cab-site.b_1", "012345678901234", "cab%d"} {
		if err := checkName(name); err != nil {
			t.Errorf("checkName(%q): %v", name, err)
		}
	}
}

func TestTAPErrorMessages(t *testing.T) {
	for _, c := range []struct {
		s    step
		err  unix.Errno
		want string
	}{
		{stepOpen, unix.ENOENT, "/dev/net/tun missing (no such file or directory): load the tun module (modprobe tun)"},
		{stepOpen, unix.ENODEV, "modprobe tun"},
		{stepOpen, unix.EACCES, "/dev/net/tun: permission denied: run as root"},
		{stepCreate, unix.EPERM, `open tap "cab0": operation not permitted: run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep `},
		{stepAttach, unix.EPERM, "grant CAP_NET_ADMIN"},
		{stepAttach, unix.EBUSY, "device or resource busy: another process has the device open"},
		{stepAttach, unix.EINVAL, "exists and is not a single-queue TAP"},
		{stepCreate, unix.EINVAL, "refused the device name"},
		{stepUp, unix.EPERM, "or bring it up beforehand (ip link set cab0 up)"},
		{stepCreate, unix.ENOMEM, `open tap "cab0": cannot allocate memory`},
	} {
		err := tapError("cab0", c.s, c.err)
		msg := err.Error()
		if !strings.Contains(msg, c.want) || !strings.HasPrefix(msg, `open tap "cab0": `) || strings.Contains(msg, "\n") {
			t.Errorf("step %d, %v: %q does not say %q", c.s, c.err, msg, c.want)
		}
		if !errors.Is(err, c.err) {
			t.Errorf("step %d, %v: %q does not wrap the cause", c.s, c.err, msg)
		}
	}
}

// hasFlag reports whether ip lists flag for the device.
func (l linkInfo) hasFlag(flag string) bool {
	for _, f := range l.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// TestTAPSetCarrier: SetCarrier turns the carrier that ip link shows off
// (NO-CARRIER) and on (LOWER_UP); after Close it is an error.
func TestTAPSetCarrier(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	tap := openIn(t, ns, "cabt0")
	var c Carrier = tap // the Linux TAP has a carrier to set
	carrier := func() (lowerUp, noCarrier bool) {
		l, ok := link(t, ns, "cabt0")
		if !ok {
			t.Fatal("TAP gone")
		}
		return l.hasFlag("LOWER_UP"), l.hasFlag("NO-CARRIER")
	}
	if up, no := carrier(); !up || no {
		t.Fatalf("a TAP just opened: LOWER_UP %v, NO-CARRIER %v; want carrier", up, no)
	}
	for _, want := range []bool{false, false, true, false, true} {
		if err := c.SetCarrier(want); err != nil {
			t.Fatalf("SetCarrier(%v): %v", want, err)
		}
		if up, no := carrier(); up != want || no == want {
			t.Fatalf("after SetCarrier(%v): LOWER_UP %v, NO-CARRIER %v", want, up, no)
		}
	}
	tap.Close()
	if err := tap.SetCarrier(true); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetCarrier after Close: %v, want net.ErrClosed", err)
	}
}
