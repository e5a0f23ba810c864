package bridgeif

import (
	"crypto/rand"
	"encoding/hex"
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
func netns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "cabtap-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// inNetns runs f with the calling thread in namespace ns.
func inNetns(t *testing.T, ns string, f func()) {
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

func TestTAPCreateReadWriteClose(t *testing.T) {
	needRoot(t)
	ns := netns(t)
	tap := openIn(t, ns, "cabt0")
	if !tap.Created() || tap.Name() != "cabt0" {
		t.Fatalf("created=%v name=%q", tap.Created(), tap.Name())
	}
	out := ipOut(t, "-n", ns, "link", "show", "cabt0")
	if !strings.Contains(out, "UP") {
		t.Fatalf("TAP not up: %s", out)
	}
	if hw, err := tap.HardwareAddr(); err != nil || len(hw) != 6 || !strings.Contains(out, "link/ether "+hw.String()) {
		t.Fatalf("HardwareAddr %v %v; ip says %s", hw, err, out)
	}
	want := net.HardwareAddr{0x02, 0xca, 0xb0, 0, 0, 1}
	if err := tap.SetHardwareAddr(want); err != nil {
		t.Fatal(err)
	}
	if hw, err := tap.HardwareAddr(); err != nil || hw.String() != want.String() {
		t.Fatalf("MAC after SetHardwareAddr: %v %v", hw, err)
	}
	if err := tap.SetMTU(1400); err != nil {
		t.Fatal(err)
	}
	if m, err := tap.MTU(); err != nil || m != 1400 {
		t.Fatalf("MTU %d %v", m, err)
	}
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "cabt0")
	// A ping to a neighbour makes the kernel ARP for it through the TAP.
	ping := exec.Command("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.3", "-W", "1", "192.0.2.2")
	ping.Start()
	defer ping.Process.Kill()
	bufs := [][]byte{make([]byte, 2048), make([]byte, 2048)}
	sizes := make([]int, 2)
	var arp []byte
	deadline := time.Now().Add(5 * time.Second)
	for arp == nil && time.Now().Before(deadline) {
		n, err := tap.ReadBatch(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			f := bufs[i][16 : 16+sizes[i]]
			if f[12] == 0x08 && f[13] == 0x06 {
				arp = append([]byte(nil), f...)
			}
		}
	}
	if arp == nil {
		t.Fatal("no ARP request read from the TAP")
	}
	// Answer it: 192.0.2.2 is at 02:00:00:00:00:02. The kernel learns it.
	mac := []byte{2, 0, 0, 0, 0, 2}
	reply := make([]byte, 16+42)
	f := reply[16:]
	copy(f[0:6], arp[6:12])
	copy(f[6:12], mac)
	f[12], f[13] = 0x08, 0x06
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 2})
	copy(f[22:28], mac)
	copy(f[28:32], []byte{192, 0, 2, 2})
	copy(f[32:38], arp[22:28])
	copy(f[38:42], arp[28:32])
	if _, err := tap.WriteBatch([][]byte{reply}, 16); err != nil {
		t.Fatal(err)
	}
	learned := false
	for i := 0; i < 50 && !learned; i++ {
		learned = strings.Contains(ipOut(t, "-n", ns, "neigh", "show", "192.0.2.2"), "02:00:00:00:00:02")
		time.Sleep(50 * time.Millisecond)
	}
	if !learned {
		t.Fatal("the kernel did not learn the MAC from the ARP reply written to the TAP")
	}

	// Close unblocks a blocked read, and the created TAP goes away.
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := tap.ReadBatch(bufs, sizes, 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	tap.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if _, err := tap.WriteBatch([][]byte{reply}, 16); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	gone := false
	for i := 0; i < 50 && !gone; i++ {
		gone = exec.Command("ip", "-n", ns, "link", "show", "cabt0").Run() != nil
		time.Sleep(20 * time.Millisecond)
	}
	if !gone {
		t.Fatal("a TAP cab created survived Close")
	}
}

func TestTAPPersistentIsAttached(t *testing.T) {
	needRoot(t)
	ns := netns(t)
	ipOut(t, "-n", ns, "tuntap", "add", "dev", "cabp0", "mode", "tap")
	idx := ipOut(t, "-n", ns, "-o", "link", "show", "cabp0")
	tap := openIn(t, ns, "cabp0")
	if tap.Created() {
		t.Fatal("an existing TAP was reported as created")
	}
	tap.Close()
	after := ipOut(t, "-n", ns, "-o", "link", "show", "cabp0")
	if strings.SplitN(idx, ":", 2)[0] != strings.SplitN(after, ":", 2)[0] {
		t.Fatalf("the TAP was recreated: %q vs %q", idx, after)
	}
}

func TestTAPErrors(t *testing.T) {
	if _, err := OpenTAP(strings.Repeat("x", 20)); err == nil || !strings.Contains(err.Error(), "characters") {
		t.Fatalf("long name: %v", err)
	}
	msg := tapError("cab0", unix.EPERM).Error()
	if !strings.Contains(msg, "CAP_NET_ADMIN") {
		t.Fatalf("EPERM message %q names no fix", msg)
	}
	if msg := tapError("cab0", unix.ENOENT).Error(); !strings.Contains(msg, "modprobe tun") {
		t.Fatalf("ENOENT message %q names no fix", msg)
	}
	needRoot(t)
	ns := netns(t)
	ipOut(t, "-n", ns, "link", "add", "cabv0", "type", "veth", "peer", "name", "cabv1")
	var err error
	inNetns(t, ns, func() { _, err = OpenTAP("cabv0") })
	if err == nil || !strings.Contains(err.Error(), "not a TAP") {
		t.Fatalf("opening a veth as TAP: %v", err)
	}
}
