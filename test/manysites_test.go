//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The recipes of the README's "Many sites": Linux bonding, Open vSwitch
// with RSTP and the Linux bridge with STP over several cab cables, each
// run with its file from configs/ (the command line adds only keys,
// addresses and names). The cables' carrier follows the peers, so the
// bond, the bridges and spanning tree see a hub die as a cable pulled.

// configPath is an example configuration file of configs/.
func configPath(name string) string { return filepath.Join("..", "configs", name) }

// lan makes n namespaces on one underlay segment (a Linux bridge in an
// underlay namespace of its own): site i has 198.51.100.(i+1) on eth0.
func lan(t *testing.T, names ...string) []*site {
	t.Helper()
	ul := newNetns(t, "ul")
	mustRun(t, "ip", "-n", ul.ns, "link", "add", "br0", "type", "bridge")
	mustRun(t, "ip", "-n", ul.ns, "link", "set", "br0", "up")
	id := randomID(t)
	var sites []*site
	for i, name := range names {
		s := newNetns(t, name)
		s.ulIf = "eth0"
		outer := fmt.Sprintf("u%s%d", id, i)
		mustRun(t, "ip", "-n", ul.ns, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", s.ns)
		mustRun(t, "ip", "-n", ul.ns, "link", "set", outer, "master", "br0", "up")
		s.v4 = fmt.Sprintf("198.51.100.%d", i+1)
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.v4+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "eth0", "up")
		sites = append(sites, s)
	}
	return sites
}

// vethInto links a device dev in a's namespace to bridge br in b's
// namespace with a veth pair; dev is left down and unattached.
func vethInto(t *testing.T, a *site, dev string, b *site, br string) {
	t.Helper()
	peer := "v" + randomID(t)
	mustRun(t, "ip", "-n", a.ns, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", b.ns)
	mustRun(t, "ip", "-n", b.ns, "link", "set", peer, "master", br, "up")
}

// pingRun is a ping every interval from a namespace, started in the
// background; result waits for it and reads its replies.
type pingRun struct {
	p     *proc
	count int
	every time.Duration
}

func startPing(t *testing.T, ns, addr string, count int, every time.Duration) *pingRun {
	t.Helper()
	p := start(t, ns, "ping", "-n", "-D", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", every.Seconds()), "-W", "1", addr)
	return &pingRun{p: p, count: count, every: every}
}

// pingResult is what a pingRun saw.
type pingResult struct {
	sent, replies int
	lost          int           // requests in the longest run without a reply
	outage        time.Duration // from the last reply before that run to the first after it
}

func (r pingResult) String() string {
	return fmt.Sprintf("%d of %d pings answered, longest outage %v (%d pings lost in a row)",
		r.replies, r.sent, r.outage.Round(10*time.Millisecond), r.lost)
}

// result waits for the ping to end and returns what it saw.
func (r *pingRun) result(t *testing.T) pingResult {
	t.Helper()
	if !r.p.wait(time.Duration(r.count)*r.every*3 + 20*time.Second) {
		t.Fatalf("ping did not end: %s", r.p.state())
	}
	at := map[int]float64{} // seq → reply time, unix seconds
	for _, m := range regexp.MustCompile(`\[(\d+\.\d+)\] .*icmp_seq=(\d+) `).FindAllStringSubmatch(r.p.stdout.String(), -1) {
		ts, _ := strconv.ParseFloat(m[1], 64)
		n, _ := strconv.Atoi(m[2])
		at[n] = ts
	}
	res := pingResult{sent: r.count, replies: len(at)}
	last, run := 0.0, 0
	for seq := 1; seq <= r.count; seq++ {
		ts, ok := at[seq]
		if !ok {
			run++
			continue
		}
		if run > res.lost && last > 0 {
			res.lost = run
			res.outage = time.Duration((ts - last) * float64(time.Second))
		}
		run, last = 0, ts
	}
	if run > res.lost { // the outage never ended
		res.lost, res.outage = run, time.Duration(run)*r.every
	}
	return res
}

// siteBond is the bond of a site in the bond recipe: Linux bonding, or
// an Open vSwitch bond where the kernel has no bonding.
type siteBond struct {
	kind string // "linux" or "ovs"
	s    *site
	ctl  string // ovs-vswitchd's control socket
}

// info is what the bond says of itself.
func (b *siteBond) info(t *testing.T) string {
	t.Helper()
	if b.kind == "ovs" {
		return mustRun(t, "ovs-appctl", "-t", b.ctl, "bond/show", "bond0")
	}
	return mustRun(t, "ip", "netns", "exec", b.s.ns, "cat", "/proc/net/bonding/bond0")
}

// active is the bond's active member (slave).
func (b *siteBond) active(t *testing.T) string {
	t.Helper()
	re := regexp.MustCompile(`Currently Active Slave: (\S+)`)
	if b.kind == "ovs" {
		re = regexp.MustCompile(`(?:member|slave) (\S+): enabled\s+active (?:member|slave)`)
	}
	if m := re.FindStringSubmatch(b.info(t)); m != nil {
		return m[1]
	}
	return ""
}

// ready reports whether both members are up in the bond.
func (b *siteBond) ready(t *testing.T) bool {
	t.Helper()
	if b.kind == "ovs" {
		return len(regexp.MustCompile(`(?:member|slave) cab\d: enabled`).FindAllString(b.info(t), -1)) == 2
	}
	return strings.Count(b.info(t), "MII Status: up") == 3
}

// TestRecipeBondFailover: a site's active-backup bond (miimon 100) over
// two cab TAPs, one cable to each of two hubs whose TAPs share the hub
// side's LAN (each hub's bridge has a leg in it). kill -9 of the hub in
// use: the cable's carrier drops about --dead-after later, the bond moves
// to the other cable, and a ping every 10 ms from the site to a host on
// the hub side resumes. The bond is Linux bonding (skipped, loudly, on a
// kernel without it) and, the same recipe, an Open vSwitch bond.
func TestRecipeBondFailover(t *testing.T) {
	t.Parallel()
	t.Run("linux", func(t *testing.T) {
		t.Parallel()
		probe := newNetns(t, "bondprobe")
		if out, err := run(5*time.Second, "ip", "-n", probe.ns, "link", "add", "bond0", "type", "bond"); err != nil {
			// A kernel without modules (a microVM) has no bonding;
			// the recipe itself is still run, with an Open vSwitch bond.
			fmt.Fprintf(os.Stderr, "\n*** TestRecipeBondFailover/linux SKIPPED: no Linux bonding in this kernel ***\n\n")
			t.Skipf("SKIPPED: this kernel has no Linux bonding (CONFIG_BONDING; modprobe bonding): %s — the ovs subtest runs the same recipe with an Open vSwitch bond", strings.TrimSpace(out))
		}
		bondRecipe(t, "linux")
	})
	t.Run("ovs", func(t *testing.T) {
		t.Parallel()
		bondRecipe(t, "ovs")
	})
}

func bondRecipe(t *testing.T, kind string) {
	ss := lan(t, "site", "hub1", "hub2")
	site, hubs := ss[0], ss[1:]
	// The hub side's LAN, with a host on it.
	core := newNetns(t, "core")
	mustRun(t, "ip", "-n", core.ns, "link", "add", "brc", "type", "bridge")
	mustRun(t, "ip", "-n", core.ns, "addr", "add", "192.0.2.1/24", "dev", "brc")
	mustRun(t, "ip", "-n", core.ns, "link", "set", "brc", "up")
	// Each hub its own PSK: in PSK-only mode a server's key, and so its
	// TAP's MAC, derives from the PSK.
	var psks []string
	var srvs []*proc
	for _, h := range hubs {
		psk := genkey(t, h.path("hub.psk"))
		psks = append(psks, psk)
		mustRun(t, "ip", "-n", h.ns, "link", "add", "br0", "type", "bridge")
		mustRun(t, "ip", "-n", h.ns, "link", "set", "br0", "up")
		vethInto(t, h, "lan", core, "brc")
		mustRun(t, "ip", "-n", h.ns, "link", "set", "lan", "master", "br0", "up")
		srvs = append(srvs, cabAs(t, h, h.ns, nil, "server", "-f", configPath("bond-hub.toml"), "-p", port, "--psk", psk))
	}
	// The site: bond0 over two persistent TAPs that the cab clients open.
	for _, tap := range []string{"cab1", "cab2"} {
		mustRun(t, "ip", "-n", site.ns, "tuntap", "add", "dev", tap, "mode", "tap")
	}
	b := &siteBond{kind: kind, s: site}
	if kind == "linux" {
		mustRun(t, "ip", "-n", site.ns, "link", "add", "bond0", "type", "bond", "mode", "active-backup", "miimon", "100")
		for _, tap := range []string{"cab1", "cab2"} {
			mustRun(t, "ip", "-n", site.ns, "link", "set", tap, "master", "bond0")
		}
		mustRun(t, "ip", "-n", site.ns, "addr", "add", "192.0.2.10/24", "dev", "bond0")
		mustRun(t, "ip", "-n", site.ns, "link", "set", "bond0", "up")
	} else {
		db := startOVS(t, site, "192.0.2.10")
		b.ctl = filepath.Join(site.path("ovs"), "vswitchd.ctl")
		for _, tap := range []string{"cab1", "cab2"} {
			mustRun(t, "ip", "-n", site.ns, "link", "set", tap, "up")
		}
		mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "add-bond", "brx", "bond0", "cab1", "cab2",
			"bond_mode=active-backup", "other_config:bond-detect-mode=miimon", "other_config:bond-miimon-interval=100")
	}
	var clis []*proc
	for i, h := range hubs {
		clis = append(clis, cabAs(t, site, fmt.Sprintf("%s-%d", site.ns, i+1), nil,
			"client", "-f", configPath(fmt.Sprintf("bond-site-%d.toml", i+1)), "--psk", psks[i], h.v4+":"+port))
	}
	waitPeerUp(t, upTimeout, append(srvs, clis...)...)
	for _, tap := range []string{"cab1", "cab2"} {
		waitCarrier(t, site, tap, true, 5*time.Second)
	}
	if !waitFor(5*time.Second, func() bool { return b.ready(t) }) {
		t.Fatalf("the bond and both members not up:\n%s", b.info(t))
	}
	waitPing(t, 2*upTimeout, site.ns, "192.0.2.1")
	active := b.active(t)
	if active != "cab1" && active != "cab2" {
		t.Fatalf("active member %q:\n%s", active, b.info(t))
	}
	victim := map[string]int{"cab1": 0, "cab2": 1}[active]
	other := map[string]string{"cab1": "cab2", "cab2": "cab1"}[active]

	const count, interval = 800, 10 * time.Millisecond
	pr := startPing(t, site.ns, "192.0.2.1", count, interval)
	time.Sleep(2 * time.Second)
	srvs[victim].signal(syscall.SIGKILL) // the hub in use dies
	detect := waitCarrier(t, site, active, false, 10*time.Second)
	res := pr.result(t)
	t.Logf("%s bond: %s's carrier dropped %v after kill -9 of its hub; pings every %v: %v", kind, active, detect.Round(10*time.Millisecond), interval, res)
	if got := b.active(t); got != other {
		t.Errorf("active member after the failover: %q, want %s\n%s", got, other, b.info(t))
	}
	// Traffic resumes within about a second of the detection; the bound
	// is generous for a loaded machine.
	if limit := detect + 5*time.Second; res.outage > limit {
		t.Errorf("outage %v, want within %v (detection %v + 5 s)", res.outage, limit, detect)
	}
	if res.replies < count/2 {
		t.Errorf("%d of %d pings answered", res.replies, count)
	}
	if res.lost == 0 {
		t.Error("no ping lost: the kill did not hit the path in use")
	}
	if !strings.Contains(clis[victim].stderr.String(), `msg="carrier down" reason="last peer down"`) {
		t.Errorf("the client of the dead hub did not log carrier down:\n%s", clis[victim].stderr.String())
	}
}

// rstpRoles returns the RSTP role of each port of bridge brx, from
// ovs-vswitchd's rstp/show ("cab1" → "Root").
func rstpRoles(t *testing.T, ctl string) map[string]string {
	t.Helper()
	out, err := run(5*time.Second, "ovs-appctl", "-t", ctl, "rstp/show", "brx")
	roles := map[string]string{}
	if err != nil {
		return roles
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+(\S+)\s+(Root|Designated|Alternate|Backup|Disabled)\s+(\S+)`).FindAllStringSubmatch(out, -1) {
		roles[m[1]] = m[2] + "/" + m[3]
	}
	return roles
}

// hexCapture runs tcpdump on dev in ns with filter, printing every frame in
// hex, until stop; it waits until tcpdump listens.
type hexCapture struct{ p *proc }

func startHexCapture(t *testing.T, ns, dev, filter string) *hexCapture {
	t.Helper()
	p := start(t, ns, "tcpdump", "-i", dev, "-n", "-l", "-e", "-XX", "-U", filter)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), "listening on") || p.exited() }) || p.exited() {
		t.Fatalf("tcpdump on %s in %s: %s\n%s", dev, ns, p.state(), p.stderr.String())
	}
	return &hexCapture{p: p}
}

// frames stops the capture and returns each frame's bytes, as hex.
func (c *hexCapture) frames(t *testing.T) []string {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // the last frames reach the output
	c.p.signal(syscall.SIGINT)
	if !c.p.wait(5 * time.Second) {
		t.Fatalf("tcpdump did not stop: %s", c.p.state())
	}
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, line := range strings.Split(c.p.stdout.String(), "\n") {
		m := regexp.MustCompile(`^\s+0x[0-9a-f]+:\s+((?:[0-9a-f]{2,4}\s)+)`).FindStringSubmatch(line)
		if m == nil {
			flush()
			continue
		}
		cur.WriteString(strings.ReplaceAll(m[1], " ", ""))
	}
	flush()
	return out
}

// TestRecipeOVSRSTP: three sites, each an Open vSwitch bridge (userspace
// datapath) with RSTP on, a host port, and a cab cable to each of two
// hubs; the hubs make two shared segments, so the sites form a loop. RSTP
// blocks it: a broadcast reaches another site's host once, not again and
// again; the BPDUs cross the cables byte for byte. kill -9 of the hub
// that carries site 2's traffic to site 3: its cables drop their carrier
// about --dead-after later, RSTP moves to the other hub, and a ping every
// 10 ms between the sites resumes.
func TestRecipeOVSRSTP(t *testing.T) {
	t.Parallel()
	ss := lan(t, "hub1", "hub2", "s1", "s2", "s3")
	hubs, sites := ss[:2], ss[2:]
	var psks []string
	var srvs []*proc
	for _, h := range hubs {
		psk := genkey(t, h.path("hub.psk"))
		psks = append(psks, psk)
		srvs = append(srvs, cabAs(t, h, h.ns, nil, "server", "-f", configPath("rstp-hub.toml"), "-p", port, "--psk", psk))
	}
	ctls := make([]string, len(sites))
	var clis []*proc
	for i, s := range sites {
		db := startOVS(t, s, fmt.Sprintf("192.0.2.%d", 11+i))
		ctls[i] = filepath.Join(s.path("ovs"), "vswitchd.ctl")
		// Site 1 is the root bridge. Timers: hello 1 s, max age 6 s,
		// forward delay 4 s (the least RSTP allows); the host port is an
		// edge port.
		mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "set", "bridge", "brx", "rstp_enable=true",
			fmt.Sprintf("other_config:rstp-priority=%d", 4096*(i+1)), "other_config:rstp-hello-time=1",
			"other_config:rstp-max-age=6", "other_config:rstp-forward-delay=4")
		mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "set", "port", "int0", "other_config:rstp-port-admin-edge=true")
		for j, h := range hubs {
			clis = append(clis, cabAs(t, s, fmt.Sprintf("%s-%d", s.ns, j+1), []string{"OVS_DB_SOCK=" + db},
				"client", "-f", configPath(fmt.Sprintf("rstp-site-%d.toml", j+1)), "-s", fmt.Sprintf("tap:cab%d,ovs=brx", j+1),
				"--psk", psks[j], h.v4+":"+port))
		}
	}
	waitPeerUp(t, upTimeout, append(srvs, clis...)...)

	// RSTP settles: on sites 2 and 3 one cable is the root port, the
	// other an alternate (blocked); site 1, the root, forwards on both.
	var roles [3]map[string]string
	settled := waitFor(30*time.Second, func() bool {
		for i := range sites {
			roles[i] = rstpRoles(t, ctls[i])
		}
		ok := strings.HasPrefix(roles[0]["cab1"], "Designated/Forwarding") && strings.HasPrefix(roles[0]["cab2"], "Designated/Forwarding")
		for _, r := range roles[1:] {
			ok = ok && (r["cab1"] == "Root/Forwarding" && r["cab2"] == "Alternate/Discarding" ||
				r["cab2"] == "Root/Forwarding" && r["cab1"] == "Alternate/Discarding")
		}
		return ok
	})
	if !settled {
		for i := range sites {
			out, _ := run(5*time.Second, "ovs-appctl", "-t", ctls[i], "rstp/show", "brx")
			t.Logf("site %d:\n%s", i+1, out)
		}
		t.Fatalf("RSTP did not settle within 30 s: %v", roles)
	}
	t.Logf("RSTP roles: site 1 %v, site 2 %v, site 3 %v", roles[0], roles[1], roles[2])
	waitPing(t, 20*time.Second, sites[1].ns, "192.0.2.13")

	// The loop is blocked: 5 broadcast pings from site 2 reach site 3's
	// host 5 times. BPDUs from site 1 reach site 2 as site 1 sent them.
	bc := startHexCapture(t, sites[2].ns, "int0", "icmp and dst host 192.0.2.255")
	sent := startHexCapture(t, sites[0].ns, "cab1", "ether dst 01:80:c2:00:00:00")
	got := startHexCapture(t, sites[1].ns, "cab1", "ether dst 01:80:c2:00:00:00")
	run(15*time.Second, "ip", "netns", "exec", sites[1].ns, "ping", "-n", "-b", "-c", "5", "-i", "0.2", "-W", "1", "192.0.2.255")
	time.Sleep(3 * time.Second) // a frame that circulated would come back within this
	if n := len(bc.frames(t)); n != 5 {
		t.Errorf("site 3's host saw %d copies of 5 broadcast frames, want 5 (a loop multiplies them)", n)
	}
	sentSet := map[string]bool{}
	for _, f := range sent.frames(t) {
		sentSet[f] = true
	}
	matched, fromSite1 := 0, 0
	for _, f := range got.frames(t) {
		if len(f) >= 24 && sentSetHasSource(sentSet, f[12:24]) {
			fromSite1++
			if sentSet[f] {
				matched++
			}
		}
	}
	if fromSite1 < 2 || matched != fromSite1 {
		t.Errorf("BPDUs from site 1 at site 2: %d, of which %d byte-identical to one site 1 sent (%d sent); want at least 2, all identical", fromSite1, matched, len(sentSet))
	}

	// The hub that carries site 2's traffic dies.
	victim := 0
	if roles[1]["cab2"] == "Root/Forwarding" {
		victim = 1
	}
	dev := fmt.Sprintf("cab%d", victim+1)
	const count, interval = 800, 10 * time.Millisecond
	pr := startPing(t, sites[1].ns, "192.0.2.13", count, interval)
	time.Sleep(2 * time.Second)
	srvs[victim].signal(syscall.SIGKILL)
	detect := waitCarrier(t, sites[1], dev, false, 10*time.Second)
	res := pr.result(t)
	after := rstpRoles(t, ctls[1])
	t.Logf("RSTP: site 2's %s carrier dropped %v after kill -9 of hub %d; pings site 2 → site 3 every %v: %v; roles now %v",
		dev, detect.Round(10*time.Millisecond), victim+1, interval, res, after)
	other := fmt.Sprintf("cab%d", 2-victim)
	if after[other] != "Root/Forwarding" {
		t.Errorf("site 2's %s is %q after the failover, want Root/Forwarding", other, after[other])
	}
	if limit := detect + 5*time.Second; res.outage > limit {
		t.Errorf("outage %v, want within %v (detection %v + 5 s)", res.outage, limit, detect)
	}
	if res.lost == 0 || res.replies < count/2 {
		t.Errorf("pings: %v; want some lost to the kill, and most answered", res)
	}
	// The surviving hub forgot its MACs when the BPDUs announced the
	// change: without that, frames for site 3's host would go on to
	// site 1, where hub 1 no longer leads, until the host spoke again.
	if f := flushesOf(t, hubs[1-victim]); f < 1 {
		t.Errorf("surviving hub: %d MAC table flushes for topology changes, want at least 1", f)
	}
}

// flushesOf is `cab status --json`'s fdb_flushes of s's cab (--name s.ns).
func flushesOf(t *testing.T, s *site) uint64 {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st struct {
		Flushes uint64 `json:"fdb_flushes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Flushes
}

// sentSetHasSource reports whether a frame in set has source MAC src (hex).
func sentSetHasSource(set map[string]bool, src string) bool {
	for f := range set {
		if len(f) >= 24 && f[12:24] == src {
			return true
		}
	}
	return false
}

// bridgePorts returns the STP state of each port of br0 in s's namespace
// ("cab-in" → "forwarding").
func bridgePorts(t *testing.T, s *site) map[string]string {
	t.Helper()
	out, err := run(5*time.Second, "bridge", "-n", s.ns, "-j", "link", "show")
	states := map[string]string{}
	if err != nil {
		return states
	}
	var ls []struct {
		Name   string `json:"ifname"`
		Master string `json:"master"`
		State  string `json:"state"`
	}
	if json.Unmarshal([]byte(out), &ls) == nil {
		for _, l := range ls {
			if l.Master == "br0" {
				states[l.Name] = l.State
			}
		}
	}
	return states
}

// TestRecipeLinuxBridgeSTP: a triangle of sites, each a Linux bridge with
// kernel STP and tuned timers (hello 1 s, max age 6 s, forward delay 2 s),
// joined pairwise by cab cables whose carrier follows the peer at both
// ends (a server told carrier=follow). STP blocks one port of the
// triangle: a broadcast reaches the far site once. kill -9 of the cable
// that carries site A's traffic to site C: the blocked port takes over
// after listening and learning, and a ping every 10 ms resumes.
func TestRecipeLinuxBridgeSTP(t *testing.T) {
	t.Parallel()
	sites := lan(t, "a", "b", "c")
	// The bridges get a MAC of their own: a Linux bridge otherwise takes
	// its smallest port's, and changes it when that port goes away.
	for i, s := range sites {
		mustRun(t, "ip", "-n", s.ns, "link", "add", "br0", "address", fmt.Sprintf("02:00:5e:00:00:%02x", 0x21+i), "type", "bridge", "stp_state", "1",
			"priority", strconv.Itoa(4096*(i+1)), "hello_time", "100", "max_age", "600", "forward_delay", "200")
		mustRun(t, "ip", "-n", s.ns, "addr", "add", fmt.Sprintf("192.0.2.%d/24", 21+i), "dev", "br0")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "br0", "up")
	}
	// Site i serves the cable from site i+1 and dials site i-1: A serves
	// B, B serves C, C serves A.
	// Each cable its own PSK.
	var srvs, clis []*proc
	var psks []string
	for _, s := range sites {
		psk := genkey(t, s.path("link-in.psk"))
		psks = append(psks, psk)
		srvs = append(srvs, cabAs(t, s, s.ns+"-in", nil, "server", "-f", configPath("stp-link-server.toml"), "-p", port, "--psk", psk))
	}
	for i, s := range sites {
		to := (i + 2) % 3
		clis = append(clis, cabAs(t, s, s.ns+"-out", nil, "client", "-f", configPath("stp-link-client.toml"), "--psk", psks[to], sites[to].v4+":"+port))
	}
	waitPeerUp(t, upTimeout, append(srvs, clis...)...)

	// STP settles: one port of the six blocks, the others forward.
	var states [3]map[string]string
	settled := waitFor(30*time.Second, func() bool {
		blocking, forwarding := 0, 0
		for i, s := range sites {
			states[i] = bridgePorts(t, s)
			for _, st := range states[i] {
				switch st {
				case "blocking":
					blocking++
				case "forwarding":
					forwarding++
				}
			}
		}
		return blocking == 1 && forwarding == 5
	})
	if !settled {
		t.Fatalf("STP did not settle to one blocked port within 30 s: %v", states)
	}
	t.Logf("STP ports: A %v, B %v, C %v", states[0], states[1], states[2])
	a, c := sites[0], sites[2]
	waitPing(t, 20*time.Second, a.ns, "192.0.2.23")

	// The loop is blocked: 5 broadcast pings from A reach C 5 times.
	bc := startHexCapture(t, c.ns, "br0", "icmp and dst host 192.0.2.255")
	run(15*time.Second, "ip", "netns", "exec", a.ns, "ping", "-n", "-b", "-c", "5", "-i", "0.2", "-W", "1", "192.0.2.255")
	time.Sleep(3 * time.Second)
	if n := len(bc.frames(t)); n != 5 {
		t.Errorf("site C saw %d copies of 5 broadcast frames, want 5 (a loop multiplies them)", n)
	}

	// A reaches C over the cable C serves (A is the root, so C's root
	// port is that cable's); kill its server.
	if states[2]["cab-in"] != "forwarding" {
		t.Fatalf("site C's cable from A is %q, want forwarding (C's root port): %v", states[2]["cab-in"], states)
	}
	const count, interval = 1200, 10 * time.Millisecond
	pr := startPing(t, a.ns, "192.0.2.23", count, interval)
	time.Sleep(2 * time.Second)
	srvs[2].signal(syscall.SIGKILL)
	detect := waitCarrier(t, a, "cab-out", false, 10*time.Second)
	res := pr.result(t)
	t.Logf("STP: site A's cable to C lost its carrier %v after kill -9 of C's end; pings A → C every %v: %v; ports now A %v, B %v, C %v",
		detect.Round(10*time.Millisecond), interval, res, bridgePorts(t, a), bridgePorts(t, sites[1]), bridgePorts(t, c))
	// Detection, then listening and learning (2 × 2 s); generous.
	if limit := detect + 10*time.Second; res.outage > limit {
		t.Errorf("outage %v, want within %v (detection %v + 10 s)", res.outage, limit, detect)
	}
	if res.lost == 0 || res.replies < count/3 {
		t.Errorf("pings: %v; want some lost to the kill, and many answered", res)
	}
	if st := bridgePorts(t, sites[1])["cab-in"]; st != "forwarding" {
		t.Errorf("site B's cable from C is %q after the failover, want forwarding", st)
	}
}
