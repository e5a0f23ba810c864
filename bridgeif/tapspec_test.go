package bridgeif

import (
	"strings"
	"testing"
)

// On systems other than Linux, each option that needs Linux is refused in
// one line that names the system's own way; the rest parse as on Linux.
func TestTAPSpecOtherSystems(t *testing.T) {
	for _, c := range []struct{ goos, spec, want string }{
		{"freebsd", "tap0,bridge=bridge0", "bridge= needs Linux; on FreeBSD add the tap to a bridge with ifconfig bridge0 addm tap0"},
		{"darwin", "tap1,bridge=bridge1", "bridge= needs Linux; on macOS add the tap to a bridge with ifconfig bridge1 addm tap1"},
		{"windows", "cab0,bridge=br", `bridge= needs Linux; on Windows bridge the TAP adapter "cab0"`},
		{"netbsd", "tap0,bridge=bridge0", "bridge= needs Linux"},
		{"freebsd", "tap0,ovs=br-int", "ovs= needs Linux; elsewhere add the tap to the switch yourself: ovs-vsctl add-port br-int tap0"},
		{"freebsd", "tap0,mtu=9000", "mtu= needs Linux; on FreeBSD set it with ifconfig tap0 mtu 9000"},
		{"darwin", "tap0,mtu=1400", "mtu= needs Linux; on macOS set it with ifconfig tap0 mtu 1400"},
		{"windows", "cab0,mtu=1400", "mtu= needs Linux; on Windows set the MTU in the TAP adapter's Advanced properties"},
		{"windows", "cab0,offload=on", "offload=on needs Linux"},
		{"darwin", "tap0,offload=on", "offload=on needs Linux"},
		{"freebsd", "tap0,carrier=follow", "carrier=follow needs Linux"},
	} {
		_, err := parseTAPSpec(c.spec, c.goos)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %q: %v, want one line starting %q", c.goos, c.spec, err, c.want)
		}
		if _, err := parseTAPSpec(c.spec, "linux"); err != nil {
			t.Errorf("linux %q: %v", c.spec, err)
		}
	}
	for _, goos := range []string{"freebsd", "darwin", "windows"} {
		ts, err := parseTAPSpec("tap0,offload=off", goos)
		if err != nil || ts != (TAPSpec{Name: "tap0", NoOffload: true}) {
			t.Errorf("%s: offload=off: %+v %v", goos, ts, err)
		}
		if _, err := parseTAPSpec("tap0,bridge=a,ovs=b", goos); err == nil || !strings.Contains(err.Error(), "one bridge") {
			t.Errorf("%s: bridge= and ovs=: %v", goos, err)
		}
	}
}

// TestTAPSpecVLAN: vlan=N makes the port a VLAN of the TAP as a trunk;
// a bad id, or carrier=follow beside it, is refused with the fix.
func TestTAPSpecVLAN(t *testing.T) {
	ts, err := ParseTAPSpec("trunk0,ovs=br0,vlan=100")
	if err != nil || ts.VLAN != 100 || ts.OVS != "br0" {
		t.Fatalf("%+v %v", ts, err)
	}
	for spec, want := range map[string]string{
		"trunk0,vlan=0":                 "vlan=0: use a VLAN id from 1 to 4094",
		"trunk0,vlan=4095":              "vlan=4095: use a VLAN id from 1 to 4094",
		"trunk0,vlan=blue":              "vlan=blue: use a VLAN id",
		"trunk0,vlan=10,carrier=follow": "remove carrier=follow",
	} {
		if _, err := ParseTAPSpec(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
}
