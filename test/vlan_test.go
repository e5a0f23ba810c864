//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOVSTrunkVLAN: one cable, no segments. At site a, cab's TAP trunk0
// is a trunk port of an Open vSwitch bridge and cab's port is its VLAN 100
// (-s tap:trunk0,ovs=brx,vlan=100); a host is on an access port of VLAN
// 100 (192.0.2.1) and another on VLAN 200 (192.0.2.1 too, and 192.0.2.2).
// The far end, site b, is a plain TAP (192.0.2.20). It reaches VLAN 100's
// host, and only it: the MAC it learns for 192.0.2.1 is VLAN 100's host's,
// and 192.0.2.2 on VLAN 200 does not answer. The untagged frames OVS
// floods to the trunk (from its internal port, VLAN 0) are dropped by cab
// and counted as vlan_foreign in cab status. The TAP keeps its offloads.
func TestOVSTrunkVLAN(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	mustRun(t, "cp", psk, b.path("site.psk"))
	db := startOVS(t, a, "192.0.2.254")
	macs := map[int]string{}
	for _, v := range []struct {
		vid int
		ips []string
	}{{100, []string{"192.0.2.1"}}, {200, []string{"192.0.2.1", "192.0.2.2"}}} {
		h := newNetns(t, fmt.Sprintf("v%d", v.vid))
		dev := fmt.Sprintf("vh%d", v.vid)
		mustRun(t, "ip", "-n", a.ns, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		mustRun(t, "ip", "-n", a.ns, "link", "set", dev, "up")
		mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "add-port", "brx", dev, fmt.Sprintf("tag=%d", v.vid))
		for _, ip := range v.ips {
			mustRun(t, "ip", "-n", h.ns, "addr", "add", ip+"/24", "dev", "eth0")
		}
		mustRun(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		out := mustRun(t, "ip", "-n", h.ns, "-o", "link", "show", "dev", "eth0")
		macs[v.vid] = regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)[1]
	}
	srv := start(t, a.ns, "env", "OVS_DB_SOCK="+db, cabBin, "server", "-p", port, "--psk", psk,
		"-s", "tap:trunk0,ovs=brx,vlan=100", "--name", a.ns, "--state-dir", a.path("state"))
	cli := b.cab(t, "client", "--psk", b.path("site.psk"), "-s", "tap:"+tapDev, a.v4+":"+port)
	setupTap(t, b, cli, "192.0.2.20")
	waitPeerUp(t, upTimeout, srv, cli)
	if out := mustRun(t, "ovs-vsctl", "--db=unix:"+db, "list-ports", "brx"); !strings.Contains(out, "trunk0") {
		t.Fatalf("cab's TAP trunk0 is not in brx: %s", out)
	}
	if m := regexp.MustCompile(`tap_offload=(\S+)`).FindStringSubmatch(srv.stderr.String()); m == nil || m[1] == "off" {
		t.Errorf("the trunk TAP has no offloads: %v", m)
	}
	waitPing(t, 20*time.Second, b.ns, "192.0.2.1")
	if n := ping(t, b.ns, "192.0.2.1", 5); n != 5 {
		t.Errorf("far end to VLAN 100's host: %d of 5 replies", n)
	}
	far := &segHost{ns: b.ns}
	if got := neighMAC(t, far, "192.0.2.1"); got != macs[100] {
		t.Errorf("the far end has 192.0.2.1 at %s, not VLAN 100's host %s (VLAN 200's is %s)", got, macs[100], macs[200])
	}
	if n := ping(t, b.ns, "192.0.2.2", 3); n != 0 {
		t.Errorf("the far end reached VLAN 200's host (%d replies)", n)
	}
	// OVS's internal port is on no VLAN: its ARP broadcasts reach the trunk
	// untagged, and cab drops and counts them.
	if n := ping(t, a.ns, "192.0.2.20", 2); n != 0 {
		t.Errorf("the bridge's untagged internal port reached the far end (%d replies)", n)
	}
	var foreign uint64
	waitFor(10*time.Second, func() bool {
		out, err := run(5*time.Second, "ip", "netns", "exec", a.ns, cabBin, "status", "--json", "--name", a.ns)
		var st struct {
			Drops map[string]uint64 `json:"drops"`
		}
		if err == nil && json.Unmarshal([]byte(out), &st) == nil {
			foreign = st.Drops["vlan_foreign"]
		}
		return foreign > 0
	})
	if foreign == 0 {
		t.Error("cab status counts no vlan_foreign drop after untagged ARP requests reached the trunk")
	}
	srv.signal(syscall.SIGTERM)
	if !srv.wait(5*time.Second) || srv.exitCode() != 0 {
		t.Fatalf("server exit: %s", srv.state())
	}
}
