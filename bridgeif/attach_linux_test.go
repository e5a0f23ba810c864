package bridgeif

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of bridge_linux.go: ParseTAPSpec, AttachBridge, AttachOVS and
// SetTAPPersistent. Every root test runs in network namespaces of its own
// and uses addresses from 192.0.2.0/24 only.

func TestParseTAPSpecForms(t *testing.T) {
	for in, want := range map[string]TAPSpec{
		"cab0":                     {Name: "cab0"},
		"cab0,bridge=br0":          {Name: "cab0", Bridge: "br0"},
		"cab0,ovs=br-int":          {Name: "cab0", OVS: "br-int"},
		"cab0,mtu=1500":            {Name: "cab0", MTU: 1500},
		"cab0,bridge=br0,mtu=9000": {Name: "cab0", Bridge: "br0", MTU: 9000},
		"cab0,mtu=9000,ovs=br0":    {Name: "cab0", OVS: "br0", MTU: 9000},
		"cab0,mtu=68":              {Name: "cab0", MTU: 68},
		"cab0,mtu=65535":           {Name: "cab0", MTU: 65535},
		"cab0,carrier=follow":      {Name: "cab0", Carrier: "follow"},
		"cab0,bridge=b,carrier=on": {Name: "cab0", Bridge: "b", Carrier: "on"},
	} {
		got, err := ParseTAPSpec(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	// Every error names what is accepted.
	const opts = "bridge=BR, ovs=BR, mtu=N, offload=off, carrier=follow|on or vlan=N"
	for in, want := range map[string][]string{
		"":                    {"tap:NAME"},
		",bridge=br0":         {"tap:NAME"},
		"cab0,":               {opts},
		"cab0,bridge":         {opts},
		"cab0,bridge=":        {opts},
		"cab0,=br0":           {opts},
		"cab0,color=red":      {`"color"`, opts},
		"cab0,Bridge=br0":     {`"Bridge"`, opts},
		"cab0,bridge=a,ovs=b": {"bridge=", "ovs=", "one bridge"},
		"cab0,ovs=a,bridge=b": {"bridge=", "ovs=", "one bridge"},
		"cab0,mtu=67":         {"68 to 65535"},
		"cab0,mtu=65536":      {"68 to 65535"},
		"cab0,mtu=-1500":      {"68 to 65535"},
		"cab0,mtu=9k":         {"68 to 65535"},
		"cab0,carrier=off":    {"carrier=follow", "carrier=on"},
		"cab0,carrier=":       {opts},
	} {
		_, err := ParseTAPSpec(in)
		if err == nil {
			t.Errorf("%q accepted", in)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", in, err, w)
			}
		}
	}
}

// FuzzParseTAPSpecRoundTrip checks that an accepted spec, written back in
// canonical form, parses to the same TAPSpec, and that a rejected one says
// what to write instead.
func FuzzParseTAPSpecRoundTrip(f *testing.F) {
	for _, s := range []string{"cab0", "cab0,bridge=br0,mtu=9000", "x,ovs=y", "x,mtu=1500,mtu=9000",
		"x,bridge=a,ovs=b", "x,mtu=0x10", "x,=", ",", "x,ovs=a=b", "x,bridge=br0,,", "x,offload=off", "x,offload=no",
		"x,carrier=follow", "x,carrier=on,bridge=b", "x,carrier=down", "x,ovs=b,vlan=100", "x,vlan=0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTAPSpec(s)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, "tap:NAME") && !strings.Contains(msg, "bridge=BR, ovs=BR, mtu=N, offload=off, carrier=follow|on or vlan=N") && !strings.Contains(msg, "offload=on or offload=off") &&
				!strings.Contains(msg, "carrier=follow (carrier only while a peer is up) or carrier=on") &&
				!strings.Contains(msg, "68 to 65535") && !strings.Contains(msg, "one bridge") &&
				!strings.Contains(msg, "VLAN id from 1 to 4094") && !strings.Contains(msg, "remove carrier=follow") {
				t.Fatalf("%q: error %q names no accepted form", s, msg)
			}
			return
		}
		if ts.Name == "" || ts.Bridge != "" && ts.OVS != "" || ts.MTU != 0 && (ts.MTU < 68 || ts.MTU > 65535) ||
			ts.Carrier != "" && ts.Carrier != "follow" && ts.Carrier != "on" || ts.VLAN > 4094 {
			t.Fatalf("%q: accepted %+v", s, ts)
		}
		canon := ts.Name
		if ts.Bridge != "" {
			canon += ",bridge=" + ts.Bridge
		}
		if ts.OVS != "" {
			canon += ",ovs=" + ts.OVS
		}
		if ts.MTU != 0 {
			canon += ",mtu=" + strconv.Itoa(ts.MTU)
		}
		if ts.NoOffload {
			canon += ",offload=off"
		}
		if ts.Carrier != "" {
			canon += ",carrier=" + ts.Carrier
		}
		if ts.VLAN != 0 {
			canon += ",vlan=" + strconv.Itoa(int(ts.VLAN))
		}
		again, err := ParseTAPSpec(canon)
		if err != nil || again != ts {
			t.Fatalf("%q → %+v → %q → %+v %v", s, ts, canon, again, err)
		}
	})
}

// attOff is the headroom the tests leave in front of each frame.
const attOff = 16

var (
	attMAC = net.HardwareAddr{0x02, 0xca, 0xb0, 0xa7, 0x00, 0x01} // the far side of the cable
	attIP  = [4]byte{192, 0, 2, 1}
)

// attARPRequest returns a broadcast ARP request from attMAC/attIP for ip,
// after attOff bytes of headroom.
func attARPRequest(ip [4]byte) []byte {
	b := make([]byte, attOff+42)
	f := b[attOff:]
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], attMAC)
	f[12], f[13] = 0x08, 0x06
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(f[22:28], attMAC)
	copy(f[28:32], attIP[:])
	copy(f[38:42], ip[:])
	return b
}

// attIsARPReply reports whether f is the ARP reply of ip to attMAC/attIP.
func attIsARPReply(f []byte, ip [4]byte) bool {
	return len(f) >= 42 && bytes.Equal(f[0:6], attMAC) && f[12] == 0x08 && f[13] == 0x06 &&
		bytes.Equal(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 2}) && bytes.Equal(f[28:32], ip[:]) &&
		bytes.Equal(f[32:38], attMAC) && bytes.Equal(f[38:42], attIP[:])
}

// attReader reads a port in a goroutine until the port is closed.
type attReader struct {
	c    chan []byte
	done chan error
}

func attStartReader(t *testing.T, p Port) *attReader {
	r := &attReader{c: make(chan []byte, 1024), done: make(chan error, 1)}
	go func() {
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, attOff+MaxFrame)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := p.ReadBatch(bufs, sizes, attOff)
			if err != nil {
				r.done <- err
				return
			}
			for i := 0; i < n; i++ {
				select {
				case r.c <- append([]byte(nil), bufs[i][attOff:attOff+sizes[i]]...):
				default: // a test that reads nothing does not stall the reader
				}
			}
		}
	}()
	t.Cleanup(func() {
		p.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("Close did not end ReadBatch")
		}
	})
	return r
}

// wait returns the first frame for which ok holds, or nil after d.
func (r *attReader) wait(d time.Duration, ok func([]byte) bool) []byte {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case f := <-r.c:
			if ok(f) {
				return f
			}
		case <-timer.C:
			return nil
		}
	}
}

// attARP writes ARP requests for ip into tap until it reads the reply, for
// at most 10 s, and returns the MAC of ip.
func attARP(t *testing.T, tap *TAP, r *attReader, ip [4]byte) net.HardwareAddr {
	t.Helper()
	req := attARPRequest(ip)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if _, err := tap.WriteBatch([][]byte{req}, attOff); err != nil {
			t.Fatal(err)
		}
		if f := r.wait(250*time.Millisecond, func(f []byte) bool { return attIsARPReply(f, ip) }); f != nil {
			return append(net.HardwareAddr(nil), f[22:28]...)
		}
	}
	t.Fatalf("no ARP reply from %v read from the TAP in 10 s", net.IP(ip[:]))
	return nil
}

// attLink is what `ip -j link show` says about a device.
type attLink struct {
	Master string `json:"master"`
	MTU    int    `json:"mtu"`
}

func attLinkOf(t *testing.T, ns, dev string) attLink {
	t.Helper()
	var ls []attLink
	out := ipOut(t, "-n", ns, "-j", "link", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip -j link show dev %s: %v: %s", dev, err, out)
	}
	return ls[0]
}

func TestAttachBridge(t *testing.T) {
	needRoot(t)
	ns, host := netns(t), netns(t)
	ipOut(t, "-n", ns, "link", "add", "br0", "type", "bridge")
	ipOut(t, "-n", ns, "link", "set", "br0", "up")
	ipOut(t, "-n", ns, "link", "add", "cabb0", "type", "veth", "peer", "name", "cabh0", "netns", host)
	ipOut(t, "-n", ns, "link", "set", "cabb0", "master", "br0", "up")
	ipOut(t, "-n", host, "addr", "add", "192.0.2.2/24", "dev", "cabh0")
	ipOut(t, "-n", host, "link", "set", "cabh0", "up")

	tap := openIn(t, ns, "cabt0")
	r := attStartReader(t, tap)
	var att Attachment
	var err error
	inNetns(t, ns, func() { att, err = AttachBridge("cabt0", "br0") })
	if err != nil {
		t.Fatal(err)
	}
	if m := attLinkOf(t, ns, "cabt0").Master; m != "br0" {
		t.Fatalf("after AttachBridge: master %q, want br0", m)
	}

	// An ARP request crosses the bridge to the host; the reply comes back.
	hostMAC := attARP(t, tap, r, [4]byte{192, 0, 2, 2})
	if out := ipOut(t, "-n", host, "link", "show", "cabh0"); !strings.Contains(out, hostMAC.String()) {
		t.Fatalf("ARP reply from %v, but the host's veth is %s", hostMAC, out)
	}

	t.Run("jumbo", func(t *testing.T) { attJumbo(t, ns, host, tap, r, hostMAC) })

	inNetns(t, ns, func() { err = att.Detach() })
	if err != nil {
		t.Fatal(err)
	}
	if m := attLinkOf(t, ns, "cabt0").Master; m != "" {
		t.Fatalf("after Detach: master %q", m)
	}
	inNetns(t, ns, func() {
		err = att.Detach()
		if err != nil {
			return
		}
		// A device that has gone needs no detaching.
		tap.Close()
		err = att.Detach()
	})
	if err != nil {
		t.Fatalf("Detach of a detached or removed device: %v", err)
	}

	inNetns(t, ns, func() { _, err = AttachBridge("cabb0", "cabnobr0") })
	if err == nil || !strings.Contains(err.Error(), "create it with ip link add cabnobr0 type bridge") {
		t.Fatalf("a missing bridge: %v", err)
	}
	inNetns(t, ns, func() { _, err = AttachBridge("cabb0", "lo") })
	if err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("a device that is not a bridge: %v", err)
	}
	inNetns(t, ns, func() { _, err = AttachBridge("cabnodev0", "br0") })
	if err == nil || !strings.Contains(err.Error(), "cabnodev0") {
		t.Fatalf("a missing device: %v", err)
	}
}

// attJumbo raises the MTU of the bridge, the veth pair and the TAP to 9000
// and sends a 9014-byte frame each way between an AF_PACKET socket on the
// host's veth and the TAP.
func attJumbo(t *testing.T, ns, host string, tap *TAP, r *attReader, hostMAC net.HardwareAddr) {
	for _, c := range [][]string{
		{"-n", ns, "link", "set", "br0", "mtu", "9000"},
		{"-n", ns, "link", "set", "cabb0", "mtu", "9000"},
		{"-n", host, "link", "set", "cabh0", "mtu", "9000"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Skipf("SKIPPED: THE KERNEL REFUSES MTU 9000: ip %v: %v: %s", c, err, out)
		}
	}
	if err := tap.SetMTU(9000); err != nil {
		t.Skipf("SKIPPED: THE KERNEL REFUSES MTU 9000 ON A TAP: %v", err)
	}
	for _, dev := range []string{"br0", "cabb0", "cabt0"} {
		if m := attLinkOf(t, ns, dev).MTU; m != 9000 {
			t.Fatalf("%s: mtu %d", dev, m)
		}
	}

	const etype = 0x88b5 // local experimental
	proto := int(htons(etype))
	var fd int
	var err error
	inNetns(t, host, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("cabh0"); err != nil {
			return
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return
		}
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on the host's veth: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}

	frame := func(dst, src net.HardwareAddr, seed byte) []byte {
		f := make([]byte, 9014)
		copy(f[0:6], dst)
		copy(f[6:12], src)
		f[12], f[13] = etype>>8, etype&0xff
		for i := 14; i < len(f); i++ {
			f[i] = byte(i*7) + seed
		}
		return f
	}

	// Host → bridge → TAP.
	up := frame(attMAC, hostMAC, 1)
	var got []byte
	for i := 0; i < 20 && got == nil; i++ {
		if _, err := unix.Write(fd, up); err != nil {
			t.Fatalf("AF_PACKET write of %d bytes: %v", len(up), err)
		}
		got = r.wait(250*time.Millisecond, func(f []byte) bool { return f[12] == etype>>8 && f[13] == etype&0xff })
	}
	if !bytes.Equal(got, up) {
		t.Fatalf("the TAP read %d bytes, want the %d-byte frame whole", len(got), len(up))
	}

	// TAP → bridge → host.
	down := attOff + 9014
	b := make([]byte, down)
	copy(b[attOff:], frame(hostMAC, attMAC, 2))
	rb := make([]byte, 16384)
	var n int
	for i := 0; i < 20 && n != 9014; i++ {
		if _, err := tap.WriteBatch([][]byte{b}, attOff); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(250 * time.Millisecond); time.Now().Before(end); {
			m, _, err := unix.Recvfrom(fd, rb, 0)
			if err == nil && m == 9014 && bytes.Equal(rb[:m], b[attOff:]) {
				n = m
				break
			}
		}
	}
	if n != 9014 {
		t.Fatal("the host did not receive the 9014-byte frame written to the TAP")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func TestAttachOVSErrors(t *testing.T) {
	t.Run("no ovs-vsctl", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := AttachOVS("cab0", "br0")
		if err == nil || !strings.Contains(err.Error(), "install openvswitch-switch") {
			t.Fatalf("without ovs-vsctl: %v", err)
		}
	})
	t.Run("no ovsdb-server", func(t *testing.T) {
		if _, err := exec.LookPath("ovs-vsctl"); err != nil {
			t.Skip("SKIPPED: ovs-vsctl is not installed (apt-get install openvswitch-switch)")
		}
		t.Setenv("OVS_DB_SOCK", filepath.Join(t.TempDir(), "db.sock"))
		start := time.Now()
		_, err := AttachOVS("cab0", "br0")
		if err == nil || !strings.Contains(err.Error(), "is ovsdb-server running?") || !strings.Contains(err.Error(), "db.sock") {
			t.Fatalf("with no database: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v to notice that there is no database", d)
		}
	})
}

// attOVS is an ovsdb-server and an ovs-vswitchd of the test's own.
type attOVS struct {
	dir, sock string
	env       []string
}

// attGone reports whether process pid has ended: it no longer exists, or
// it is a zombie that its parent (init, for a daemon) has yet to reap.
func attGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

// attStop ends the daemon whose PID is in pidfile, and waits until it has.
func attStop(t *testing.T, pidfile string) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Errorf("%s: no PID: %q", pidfile, b)
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for end := time.Now().Add(5 * time.Second); !attGone(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("%s: PID %d ignored SIGTERM for 5 s; killed", pidfile, pid)
			return
		}
	}
}

func (o *attOVS) run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// vsctl runs ovs-vsctl against the test's database and returns its output.
func (o *attOVS) vsctl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("ovs-vsctl", append([]string{"--timeout=10", "--db=unix:" + o.sock}, args...)...)
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-vsctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (o *attOVS) log(name string) string {
	b, _ := os.ReadFile(filepath.Join(o.dir, name))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// attStartOVS starts ovsdb-server, and ovs-vswitchd in namespace ns, on
// private sockets in a temporary directory, and stops them when the test
// ends. It sets OVS_DB_SOCK for AttachOVS.
func attStartOVS(t *testing.T, ns string) *attOVS {
	for _, bin := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and CI installs openvswitch-switch", bin)
			}
			t.Skipf("SKIPPED: %s is not installed: apt-get install openvswitch-switch", bin)
		}
	}
	dir, err := os.MkdirTemp("", "cabovs") // short: unix socket paths are at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o := &attOVS{dir: dir, sock: filepath.Join(dir, "db.sock")}
	o.env = append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_DBDIR="+dir, "OVS_LOGDIR="+dir, "OVS_SYSCONFDIR="+dir)
	db := filepath.Join(dir, "conf.db")
	if err := o.run("ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { attStop(t, filepath.Join(dir, "ovsdb.pid")) })
	if err := o.run("ovsdb-server", "--remote=punix:"+o.sock, "--unixctl="+filepath.Join(dir, "ovsdb.ctl"),
		"--pidfile="+filepath.Join(dir, "ovsdb.pid"), "--detach", "--log-file="+filepath.Join(dir, "ovsdb.log"), db); err != nil {
		t.Fatalf("%v\n%s", err, o.log("ovsdb.log"))
	}
	o.vsctl(t, "--no-wait", "init")
	t.Cleanup(func() { attStop(t, filepath.Join(dir, "vswitchd.pid")) })
	// In the namespace, so that the TAP and the internal ports are there.
	if err := o.run("ip", "netns", "exec", ns, "ovs-vswitchd", "unix:"+o.sock,
		"--unixctl="+filepath.Join(dir, "vswitchd.ctl"), "--pidfile="+filepath.Join(dir, "vswitchd.pid"),
		"--detach", "--log-file="+filepath.Join(dir, "vswitchd.log")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ovs-vswitchd: %v\n%s", err, o.log("vswitchd.log"))
		}
		t.Skipf("SKIPPED: OVS-VSWITCHD CANNOT RUN HERE: %v\n%s", err, o.log("vswitchd.log"))
	}
	t.Setenv("OVS_DB_SOCK", o.sock)
	return o
}

func TestAttachOVS(t *testing.T) {
	needRoot(t)
	start := time.Now()
	ns := netns(t)
	o := attStartOVS(t, ns)
	// The userspace datapath: no kernel module needed.
	o.vsctl(t, "add-br", "cabbr0", "--", "set", "bridge", "cabbr0", "datapath_type=netdev")
	o.vsctl(t, "add-port", "cabbr0", "int0", "--", "set", "interface", "int0", "type=internal")
	// The TAP shares the namespace with int0, and the kernel would answer an
	// ARP request for 192.0.2.2 arriving on the TAP itself, past OVS: only
	// the device that has the address may answer.
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl arp_ignore: %v: %s", err, out)
	}
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "int0")
	ipOut(t, "-n", ns, "link", "set", "int0", "up")

	tap := openIn(t, ns, "cabo0")
	if err := SetTAPPersistent(tap, true); err != nil {
		tap.Close()
		t.Fatal(err)
	}
	r := attStartReader(t, tap)
	t.Cleanup(func() {
		// Runs before the reader's Close, so that the TAP goes with it.
		if err := SetTAPPersistent(tap, false); err != nil {
			t.Errorf("SetTAPPersistent(false): %v", err)
		}
	})
	if out := ipOut(t, "-n", ns, "-d", "link", "show", "cabo0"); !strings.Contains(out, "persist on") {
		t.Fatalf("not persistent after SetTAPPersistent(true): %s", out)
	}

	att, err := AttachOVS("cabo0", "cabbr0")
	if err != nil {
		t.Fatal(err)
	}
	if ports := strings.Fields(o.vsctl(t, "list-ports", "cabbr0")); !strings.Contains(strings.Join(ports, " "), "cabo0") {
		t.Fatalf("after AttachOVS: ports %v", ports)
	}
	// --may-exist: attaching again is no error.
	if _, err := AttachOVS("cabo0", "cabbr0"); err != nil {
		t.Fatalf("a second AttachOVS: %v", err)
	}

	// An ARP request crosses the OVS bridge to int0; the reply comes back.
	intMAC := attARP(t, tap, r, [4]byte{192, 0, 2, 2})
	if out := ipOut(t, "-n", ns, "link", "show", "int0"); !strings.Contains(out, intMAC.String()) {
		t.Fatalf("ARP reply from %v, but int0 is %s", intMAC, out)
	}

	if err := att.Detach(); err != nil {
		t.Fatal(err)
	}
	if out := o.vsctl(t, "list-ports", "cabbr0"); strings.Contains(out, "cabo0") {
		t.Fatalf("after Detach: ports %q", out)
	}
	if err := att.Detach(); err != nil {
		t.Fatalf("--if-exists: a second Detach: %v", err)
	}
	if _, err := AttachOVS("cabo0", "cabnobr0"); err == nil || !strings.Contains(err.Error(), "cabnobr0") {
		t.Fatalf("a missing OVS bridge: %v", err)
	}
	t.Logf("OVS started, attached, answered and detached in %v", time.Since(start).Round(time.Millisecond))
}
