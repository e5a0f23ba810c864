//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// hubSites makes a server namespace and n client namespaces on one
// underlay segment: a Linux bridge in an underlay namespace, a veth to
// each site. The server has 198.51.100.1, client i 198.51.100.(i+2).
func hubSites(t *testing.T, n int) (srv *site, clients []*site) {
	t.Helper()
	ul := newNetns(t, "ul")
	mustRun(t, "ip", "-n", ul.ns, "link", "add", "br0", "type", "bridge")
	mustRun(t, "ip", "-n", ul.ns, "link", "set", "br0", "up")
	id := randomID(t)
	for i := 0; i <= n; i++ {
		s := newNetns(t, fmt.Sprintf("s%d", i))
		s.ulIf = "eth0"
		outer := fmt.Sprintf("h%s%d", id, i)
		mustRun(t, "ip", "-n", ul.ns, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", s.ns)
		mustRun(t, "ip", "-n", ul.ns, "link", "set", outer, "master", "br0", "up")
		s.v4 = fmt.Sprintf("198.51.100.%d", i+1)
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.v4+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "eth0", "up")
		if i == 0 {
			srv = s
		} else {
			clients = append(clients, s)
		}
	}
	return srv, clients
}

// peerStatus is the part of `cab status --json` the tests read.
type peerStatus struct {
	Name       string            `json:"name"`
	Up         bool              `json:"up"`
	Addr       string            `json:"addr"`
	Transport  string            `json:"transport"`
	RxFrames   uint64            `json:"rx_frames"`
	TxFrames   uint64            `json:"tx_frames"`
	Fragmented uint64            `json:"fragmented_frames"`
	Drops      map[string]uint64 `json:"drops"`
	MACs       int               `json:"macs"`
}

// cableStatus is what `cab status --json` says of s's cable: its own drops
// (the carriers' among them) and its peers.
type cableStatus struct {
	Drops map[string]uint64 `json:"drops"`
	Peers []peerStatus      `json:"peers"`
}

func cableStatusOf(t *testing.T, s *site) cableStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st cableStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st
}

func statusOf(t *testing.T, s *site) []peerStatus { t.Helper(); return cableStatusOf(t, s).Peers }

// startHub starts a public-key server with an allow file naming clients
// c1..cn, and the clients; it waits until every TAP has its overlay
// address (192.0.2.1 for the server, .(i+2) for client i).
func startHub(t *testing.T, srv *site, clients []*site, serverArgs ...string) (*proc, []*proc) {
	t.Helper()
	skey := genkey(t, srv.path("server.key"))
	var allow strings.Builder
	for i, c := range clients {
		k := genkey(t, c.path("client.key"))
		fmt.Fprintf(&allow, "%s c%d\n", pubkey(t, k), i+1)
	}
	writeFile(t, srv.path("clients.txt"), allow.String())
	args := append([]string{"server", "-p", port, "-s", "tap:" + tapDev, "--key", skey, "--allow", srv.path("clients.txt")}, serverArgs...)
	sp := srv.cab(t, args...)
	setupTap(t, srv, sp, overlayA)
	var cps []*proc
	for i, c := range clients {
		p := c.cab(t, "client", "-s", "tap:"+tapDev, "--key", c.path("client.key"), "--server-key", pubkey(t, skey), "--keepalive", "2s", srv.v4+":"+port)
		setupTap(t, c, p, fmt.Sprintf("192.0.2.%d", i+2))
		cps = append(cps, p)
	}
	waitPeerUp(t, upTimeout, append([]*proc{sp}, cps...)...)
	return sp, cps
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
