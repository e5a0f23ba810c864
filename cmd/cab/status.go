package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"cab"
	"cab/control"
)

// status prints the peers of a running cab.
func status(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cab status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "cab", "instance `name` (the --name it was started with)")
	socket := fs.String("socket", "", "control socket `path` (default "+controlDir+"/NAME.sock)")
	asJSON := fs.Bool("json", false, "print JSON")
	showFDB := fs.Bool("fdb", false, "print the MAC table")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cab status [--json] [--fdb] [--name N]\n\nShow the peers of a running cab, or its MAC table.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
	}
	if err := cab.CheckName(*name); err != nil {
		return err
	}
	path := *socket
	if path == "" {
		path = filepath.Join(controlDir, *name+".sock")
	}
	cmd := "status"
	if *showFDB {
		cmd = "fdb"
	}
	st, fdb, err := control.Query(path, cmd)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if *showFDB {
			return enc.Encode(fdb)
		}
		return enc.Encode(st)
	}
	if *showFDB {
		printFDB(stdout, fdb)
		return nil
	}
	printStatus(stdout, st)
	return nil
}

func printFDB(w io.Writer, fdb []cab.FDBEntry) {
	sort.Slice(fdb, func(i, j int) bool {
		if a, b := segmentOrder(fdb[i].Segment), segmentOrder(fdb[j].Segment); a != b {
			return a < b
		}
		if fdb[i].Peer != fdb[j].Peer {
			return fdb[i].Peer < fdb[j].Peer
		}
		return fdb[i].MAC < fdb[j].MAC
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tMAC\tVLAN\tPEER\tAGE")
	for _, e := range fdb {
		peer := e.Peer
		if peer == "" {
			peer = "(local)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", dash(e.Segment), e.MAC, e.VLAN, peer, e.Age.Round(time.Second))
	}
	tw.Flush()
}

func printStatus(w io.Writer, st *cab.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tKEY\tSTATE\tADDR\tTRANSPORT\tUP SINCE\tHANDSHAKE\tRX FRAMES\tRX BYTES\tTX FRAMES\tTX BYTES\tMACS\tDROPS")
	now := time.Now()
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	for _, p := range st.Peers {
		state := "down"
		if p.Up {
			state = "up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n",
			p.Name, p.PublicKey[:8], state, dash(p.Addr), transportCell(p), ago(p.UpSince), ago(p.LastHandshake),
			p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.MACs, dropTotal(p.Drops))
	}
	tw.Flush()
	for _, p := range st.Peers {
		if ps := p.Path; ps != nil {
			fmt.Fprintf(w, "%s over %s: %.1f queries/s, %.1f%% lost, rtt %v, %d queries\n",
				p.Name, dash(p.Transport), ps.QueriesPerSecond, 100*ps.Loss, ps.RTT.Round(100*time.Microsecond), ps.Queries)
		}
		if d := p.DuplicateKey; d != nil {
			fmt.Fprintf(w, "%s: two clients use this key: keeping %s, holding %s off for %v\n",
				p.Name, d.Kept, d.HeldOff, time.Until(d.HeldUntil).Round(time.Second))
		}
		if len(p.Drops) > 0 {
			fmt.Fprintf(w, "%s dropped: %s\n", p.Name, dropString(p.Drops))
		}
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "dropped before a peer was known: %s\n", dropString(st.Drops))
	}
	printSegments(w, st)
	fmt.Fprintf(w, "MAC table: %d entries\n", st.FDB)
	if st.Carrier != "" {
		fmt.Fprintf(w, "carrier: %s (follows the peers: up while at least one is up)\n", st.Carrier)
	}
	if st.DeadAfter > 0 {
		fmt.Fprintf(w, "dead after: %v (fast failure detection)\n", st.DeadAfter)
	}
}

// transportCell is the TRANSPORT column: the transport, and its
// round-trip time when it measures one ("quic rtt=1.2ms").
func transportCell(p cab.PeerStatus) string {
	if p.RTT > 0 && p.Transport != "" {
		return p.Transport + " rtt=" + p.RTT.Round(10*time.Microsecond).String()
	}
	return dash(p.Transport)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dropLabels say what the drop reasons of cab.Status (the reason label of
// the metrics) mean, for cab status.
var dropLabels = map[string]string{
	"runt":             "malformed",
	"no session":       "for no session (expired, or the peer restarted)",
	"auth":             "failed authentication (a wrong key or PSK, or forged)",
	"replay":           "replayed",
	"too big":          "too big for the path",
	"rate limited":     "handshakes over the rate limit",
	"queue full":       "with the queue full",
	"not allowed":      "not allowed (a key, MAC or VLAN not allowed, or a peer removed)",
	"not in segment":   "for a segment the peer has not joined",
	"malformed":        "malformed control messages",
	"handshake replay": "replayed handshakes",
	"mac limit":        "over the MAC limit",
	"isolated":         "from client to client (isolate)",
	"mac conflict":     "claiming another peer's MAC",
	"bpdu":             "spanning-tree BPDUs (bpdu = drop)",
	"fragment":         "bad fragments",
	"duplicate key":    "from a second client with this key",
	"cookie sent":      "initiations answered with a cookie (under load)",
	"flood limit":      "broadcast/multicast/unknown frames over the flood rate",
	"flood budget":     "flooded frames over the hub's flood budget",
	"fair share":       "packets over the sender's fair share while reading fell behind",
}

// dropTotal is the DROPS column: how many, all reasons.
func dropTotal(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	n := uint64(0)
	for _, v := range m {
		n += v
	}
	return fmt.Sprint(n)
}

// dropString lists drops by reason, in words, most first.
func dropString(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		label := dropLabels[k]
		if label == "" {
			label = strings.ReplaceAll(k, "_", " ") // a carrier's own (dns_nxdomain)
		}
		fmt.Fprintf(&b, "%d %s", m[k], label)
	}
	return b.String()
}

// segmentOrder sorts the default segment first, then by name.
func segmentOrder(name string) string {
	if name == "default" {
		return ""
	}
	return "~" + name
}

// printSegments lists a cable's segments, each with its peers and MACs,
// and the segments each peer was refused.
func printSegments(w io.Writer, st *cab.Status) {
	if len(st.Segments) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tID\tPEERS\tMACS\tFROM PEERS\tFROM PORT")
	for _, g := range st.Segments {
		fmt.Fprintf(tw, "%s\t%08x\t%s\t%d\t%d\t%d\n", g.Name, g.ID, dash(strings.Join(g.Peers, ",")), g.MACs, g.FromPeers, g.FromPort)
	}
	tw.Flush()
	for _, p := range st.Peers {
		names := make([]string, 0, len(p.Refused))
		for n := range p.Refused {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "%s: segment %s: %s\n", p.Name, n, p.Refused[n])
		}
	}
}
