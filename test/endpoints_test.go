//go:build linux

package cabtest

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vdeSwitch is a real vde_switch started by a test.
type vdeSwitch struct {
	dir, mgmt, pidfile string
	pid                int
}

// startSwitch starts `vde_switch -d` with its control directory under
// s's private directory, and kills it by its PID when t ends.
func startSwitch(t *testing.T, s *site, name string) *vdeSwitch {
	t.Helper()
	sw := &vdeSwitch{dir: s.path(name), mgmt: s.path(name + ".mgmt"), pidfile: s.path(name + ".pid")}
	sw.start(t)
	t.Cleanup(func() { sw.kill() })
	return sw
}

func (sw *vdeSwitch) start(t *testing.T) {
	t.Helper()
	os.Remove(sw.pidfile)
	mustRun(t, "vde_switch", "-d", "-s", sw.dir, "-M", sw.mgmt, "-p", sw.pidfile)
	ok := waitFor(5*time.Second, func() bool {
		b, err := os.ReadFile(sw.pidfile)
		if err != nil {
			return false
		}
		sw.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && sw.pid > 0
	})
	if !ok {
		t.Fatalf("vde_switch at %s wrote no pidfile", sw.dir)
	}
	if !waitFor(5*time.Second, func() bool { _, err := os.Stat(filepath.Join(sw.dir, "ctl")); return err == nil }) {
		t.Fatalf("vde_switch at %s made no ctl socket", sw.dir)
	}
}

func (sw *vdeSwitch) kill() {
	if sw.pid > 0 {
		syscall.Kill(sw.pid, syscall.SIGTERM)
		waitFor(5*time.Second, func() bool { return syscall.Kill(sw.pid, 0) != nil })
		sw.pid = 0
	}
}

// console sends cmd to the switch's management socket and returns the
// reply up to "1000 Success".
func (sw *vdeSwitch) console(t *testing.T, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sw.mgmt, 5*time.Second)
	if err != nil {
		t.Fatalf("management console: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "1000 Success") || strings.HasPrefix(sc.Text(), "1000 ") {
			break
		}
	}
	return b.String()
}

// vdeHost puts a host on the switch: a TAP named dev in s's namespace,
// plugged into the switch by the real vde_plug, with addr.
func vdeHost(t *testing.T, s *site, sw *vdeSwitch, dev, addr string) {
	t.Helper()
	start(t, s.ns, "vde_plug", "vde://"+sw.dir, "tap://"+dev)
	if !waitFor(10*time.Second, func() bool {
		_, err := run(5*time.Second, "ip", "-n", s.ns, "link", "show", "dev", dev)
		return err == nil
	}) {
		t.Fatalf("vde_plug made no TAP %s in %s", dev, s.ns)
	}
	mustRun(t, "ip", "-n", s.ns, "link", "set", dev, "up")
	mustRun(t, "ip", "-n", s.ns, "addr", "add", addr+"/24", "dev", dev)
}

// killTree ends a process and all its descendants, by PID.
func killTree(pid int) {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			killTree(c)
		}
	}
	syscall.Kill(pid, syscall.SIGTERM)
}

// TestVDETwoSites: cab server plugged into a real vde_switch at A, client
// at B; hosts on each switch ping across. The switch console lists the
// client's own port; the switch is killed and restarted and traffic
// resumes.
func TestVDETwoSites(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	swA, swB := startSwitch(t, a, "swA"), startSwitch(t, b, "swB")
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "vde:"+swA.dir, "--psk", psk)
	cli := b.cab(t, "client", "-s", "vde:"+swB.dir, "--psk", psk, a.v4+":"+port)
	waitPeerUp(t, upTimeout, srv, cli)
	vdeHost(t, a, swA, "vh0", overlayA)
	vdeHost(t, b, swB, "vh0", overlayB)
	waitPing(t, 15*time.Second, b.ns, overlayA)
	if n := ping(t, a.ns, overlayB, 5); n != 5 {
		t.Errorf("ping A→B across the VDE cable: %d of 5", n)
	}
	if out := swA.console(t, "port/allprint"); !strings.Contains(out, "cab client") {
		t.Errorf("switch A's console does not list the client's port:\n%s", out)
	}

	// Kill switch B and start it again: cab re-plugs by itself.
	swB.kill()
	time.Sleep(500 * time.Millisecond)
	swB.start(t)
	vdeHost(t, b, swB, "vh1", "192.0.2.12")
	waitPing(t, 20*time.Second, b.ns, overlayA)
	t.Logf("traffic resumed after switch B restarted")
}

// TestDpipe: `dpipe vde_plug SW = cab client -s stdio ...` at B, and
// `dpipe vde_plug SW1 = cab plug vde:SW2` joining two switches.
func TestDpipe(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	swA, swB := startSwitch(t, a, "swA"), startSwitch(t, b, "swB")
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "vde:"+swA.dir, "--psk", psk)
	d := start(t, b.ns, "dpipe", "vde_plug", "vde://"+swB.dir, "=",
		cabBin, "client", "-s", "stdio", "--psk", psk, "--name", b.ns, "--state-dir", b.path("state"), a.v4+":"+port)
	t.Cleanup(func() { killTree(d.cmd.Process.Pid) })
	waitPeerUp(t, upTimeout, srv)
	vdeHost(t, a, swA, "vh0", overlayA)
	vdeHost(t, b, swB, "vh0", overlayB)
	waitPing(t, 15*time.Second, b.ns, overlayA)
	if n := ping(t, a.ns, overlayB, 5); n != 5 {
		t.Errorf("ping A→B through dpipe: %d of 5", n)
	}

	// cab plug under dpipe against a real vde_plug: two switches in A
	// joined by `dpipe vde_plug swA = cab plug vde:swC`.
	swC := startSwitch(t, a, "swC")
	p := start(t, a.ns, "dpipe", "vde_plug", "vde://"+swA.dir, "=", cabBin, "plug", "vde:"+swC.dir)
	t.Cleanup(func() { killTree(p.cmd.Process.Pid) })
	vdeHost(t, a, swC, "vh2", "192.0.2.3")
	// From swC's host, through cab plug, swA, the cable, swB to B's host.
	waitPing(t, 15*time.Second, a.ns, overlayB)
	if n := ping(t, a.ns, overlayB, 3, "-I", "vh2"); n != 3 {
		t.Errorf("ping from swC's host through cab plug: %d of 3", n)
	}
}

// TestLinuxBridge: each site's TAP in a Linux bridge with a veth host;
// the hosts ping across.
func TestLinuxBridge(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	for _, s := range []*site{a, b} {
		mustRun(t, "ip", "-n", s.ns, "link", "add", "br0", "type", "bridge")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "br0", "up")
	}
	// Jumbo frames: the bridges, TAPs and hosts all take 9000 bytes; the
	// underlay stays at 1500 (the kernel fragments the outer datagrams).
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev+",bridge=br0,mtu=9000", "--psk", psk)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev+",bridge=br0,mtu=9000", "--psk", psk, a.v4+":"+port)
	waitPeerUp(t, upTimeout, srv, cli)
	for i, s := range []*site{a, b} {
		if out := mustRun(t, "ip", "-n", s.ns, "-o", "link", "show", "dev", tapDev); !strings.Contains(out, "master br0") {
			t.Fatalf("TAP not in br0: %s", out)
		}
		// A veth host in the bridge: one end in br0, the other with the
		// overlay address, in a host namespace of its own.
		h := newNetns(t, "h"+strconv.Itoa(i))
		mustRun(t, "ip", "-n", s.ns, "link", "add", "vh", "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		mustRun(t, "ip", "-n", s.ns, "link", "set", "vh", "mtu", "9000", "master", "br0", "up")
		mustRun(t, "ip", "-n", h.ns, "addr", "add", []string{overlayA, overlayB}[i]+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", h.ns, "link", "set", "eth0", "mtu", "9000", "up")
		s.host = h
	}
	waitPing(t, 15*time.Second, b.host.ns, overlayA)
	if n := ping(t, a.host.ns, overlayB, 5); n != 5 {
		t.Errorf("ping between bridged hosts: %d of 5", n)
	}
	if n := ping(t, a.host.ns, overlayB, 3, "-s", "8972", "-M", "do"); n != 3 {
		t.Errorf("9000-byte jumbo pings between bridged hosts: %d of 3", n)
	}
	// On exit cab leaves the bridge; the bridge stays.
	srv.signal(syscall.SIGTERM)
	if !srv.wait(5*time.Second) || srv.exitCode() != 0 {
		t.Fatalf("server exit: %s", srv.state())
	}
	if _, err := run(5*time.Second, "ip", "-n", a.ns, "link", "show", "dev", "br0"); err != nil {
		t.Fatal("cab removed the bridge it did not create")
	}
}

// startOVS runs ovsdb-server and ovs-vswitchd (userspace datapath, no
// kernel module) inside s's namespace with private sockets, makes bridge
// brx with an internal port int0 holding addr, and stops both daemons by
// their PIDs when t ends. It returns the database socket.
func startOVS(t *testing.T, s *site, addr string) string {
	t.Helper()
	d := s.path("ovs")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(d, "db.sock")
	var pids []string
	t.Cleanup(func() {
		for _, pf := range pids {
			if b, err := os.ReadFile(pf); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGTERM)
					waitFor(5*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })
				}
			}
		}
	})
	mustRun(t, "ovsdb-tool", "create", filepath.Join(d, "conf.db"), "/usr/share/openvswitch/vswitch.ovsschema")
	mustRun(t, "ip", "netns", "exec", s.ns, "ovsdb-server", filepath.Join(d, "conf.db"), "--remote=punix:"+db,
		"--unixctl="+filepath.Join(d, "ovsdb.ctl"), "--pidfile="+filepath.Join(d, "ovsdb.pid"), "--detach", "--log-file="+filepath.Join(d, "ovsdb.log"))
	pids = append(pids, filepath.Join(d, "ovsdb.pid"))
	mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--no-wait", "init")
	mustRun(t, "env", "OVS_RUNDIR="+d, "ip", "netns", "exec", s.ns, "ovs-vswitchd", "unix:"+db,
		"--unixctl="+filepath.Join(d, "vswitchd.ctl"), "--pidfile="+filepath.Join(d, "vswitchd.pid"), "--detach", "--log-file="+filepath.Join(d, "vswitchd.log"))
	pids = append(pids, filepath.Join(d, "vswitchd.pid"))
	mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "add-br", "brx", "--", "set", "bridge", "brx", "datapath_type=netdev")
	mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "add-port", "brx", "int0", "--", "set", "interface", "int0", "type=internal")
	if !waitFor(10*time.Second, func() bool {
		_, err := run(5*time.Second, "ip", "-n", s.ns, "link", "show", "dev", "int0")
		return err == nil
	}) {
		t.Fatal("OVS made no internal port int0")
	}
	mustRun(t, "ip", "-n", s.ns, "addr", "add", addr+"/24", "dev", "int0")
	mustRun(t, "ip", "-n", s.ns, "link", "set", "int0", "up")
	mustRun(t, "ip", "-n", s.ns, "link", "set", "brx", "up")
	return db
}

// TestOpenVSwitch: an Open vSwitch bridge on each side with an internal
// port; cab's TAP is added to the bridge; the internal ports ping across.
func TestOpenVSwitch(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	dbA, dbB := startOVS(t, a, overlayA), startOVS(t, b, overlayB)
	ovsCab := func(s *site, db string, args ...string) *proc {
		args = append(args, "--name", s.ns, "--state-dir", s.path("state"))
		return start(t, s.ns, "env", append([]string{"OVS_DB_SOCK=" + db, cabBin}, args...)...)
	}
	srv := ovsCab(a, dbA, "server", "-p", port, "-s", "tap:"+tapDev+",ovs=brx", "--psk", psk)
	cli := ovsCab(b, dbB, "client", "-s", "tap:"+tapDev+",ovs=brx", "--psk", psk, a.v4+":"+port)
	waitPeerUp(t, upTimeout, srv, cli)
	if out := mustRun(t, "ovs-vsctl", "--db=unix:"+dbA, "list-ports", "brx"); !strings.Contains(out, tapDev) {
		t.Fatalf("cab's TAP not in brx: %s", out)
	}
	waitPing(t, 20*time.Second, b.ns, overlayA)
	if n := ping(t, a.ns, overlayB, 5); n != 5 {
		t.Errorf("ping between OVS internal ports: %d of 5", n)
	}
	srv.signal(syscall.SIGTERM)
	if !srv.wait(5*time.Second) || srv.exitCode() != 0 {
		t.Fatalf("server exit: %s", srv.state())
	}
	if out := mustRun(t, "ovs-vsctl", "--db=unix:"+dbA, "list-ports", "brx"); strings.Contains(out, tapDev) {
		t.Errorf("cab's TAP still in brx after exit: %s", out)
	}
}

// TestVDEAndStdioEdges: a switch that never answers (a port over its
// limit) is timed out with a clear error; end of stdin ends cab with exit 0.
func TestVDEAndStdioEdges(t *testing.T) {
	t.Parallel()
	a, _ := newPair(t)
	sw := startSwitch(t, a, "sw")
	psk := genkey(t, a.path("site.psk"))
	p := a.cab(t, "client", "-s", "vde:"+sw.dir+"[40]", "--psk", psk, "198.51.100.2:"+port)
	if !p.wait(10 * time.Second) {
		t.Fatal("cab still waiting for a switch that never answers")
	}
	if p.exitCode() != 1 || !strings.Contains(p.stderr.String(), "did not answer") {
		t.Fatalf("exit %d, stderr %q", p.exitCode(), p.stderr.String())
	}
	// stdin is /dev/null: the stream ends at once, and so does cab.
	e := a.cab(t, "client", "-s", "stdio", "--psk", psk, "198.51.100.2:"+port)
	if !e.wait(10*time.Second) || e.exitCode() != 0 {
		t.Fatalf("cab -s stdio at end of stdin: %s\n%s", e.state(), e.output())
	}
}
