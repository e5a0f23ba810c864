// Package cab is the core of cab, a secure cross-site Ethernet cable.
//
// A Cable joins one local L2 attachment (a bridgeif.Port: a TAP device, a VDE
// switch port, stdio) to one or more remote cabs (peers) over one or more
// carriers (transport.Conn: UDP by default), and switches Ethernet frames
// between them. Every frame that leaves the machine is sealed with the keys
// of a Noise IKpsk2 session (package crypto) with the peer it goes to.
//
// Frame flow, with the file each step lives in:
//
//	port ──ReadBatch──▶ portLoop (send.go): learn src MAC (forward.go) · clamp MSS
//	                    (clamp.go) · fdb lookup · seal per destination peer, or
//	                    flood within the flood rate and budget (mayFlood), or
//	                    fragment (fragment.go) · outBatch.flush: seals spread
//	                    over the crypto workers (parallel.go) · WriteBatch per conn ──▶ wire
//	wire ──ReadBatch──▶ connLoop (receive.go): header · index → session · while
//	                    reading falls behind, shed the senders above their
//	                    fair share (fairness) · Open
//	                    · authenticate: path, liveness, asks answered at once,
//	                      probes (plpmtud.go), reassembly (fragment.go)
//	                    · admit: size, MAC and VLAN policy
//	                    · forward: a BPDU's topology change forgets the fdb
//	                      (stp.go) · learn src MAC (peer) · deliver to port, or
//	                      relay to another peer (split horizon; none if isolated),
//	                      or flood within the peer's flood rate and the budget ──▶ port
//	                    handshake messages ──▶ handshake.go: initiation, response,
//	                      the index table; peers.go creates the peer it is for
//	timerLoop (timers.go): keepalives, asks (Config.DeadAfter), handshake
//	                    retries and fallbacks, rekey, expiry, path MTU
//	                    (pathmtu.go, mtu.go), fdb aging
//	setUp (peer.go): the first peer up and the last down move the port's
//	                    carrier (carrier.go)
//
// cable.go holds the Cable and its lifecycle; peer.go a peer's state, in
// named groups (handshake, route, liveness, policy, own port, stats);
// peers.go the peer table, its reload and the allow list's revocations;
// drop.go the drop counters; diagnose.go what the cable tells an operator
// (unanswered handshakes, refused ones, two clients with one key);
// status.go the snapshot cab status shows.
//
// Around the cable: settings.go and configfile.go hold Settings, what a
// configuration file (Parse) or the command line says; open.go opens every
// port and carrier by its URL (lazyconn.go: a fallback carrier that cannot
// start yet); setup.go makes a running cable of Settings (Open), and
// reload.go applies them again (Setup.Reload).
//
// One goroutine per blocking reader; the work is done inline. A peer's path
// (the conn and addr it is reached at) changes only after a packet from it
// has authenticated and passed the replay window, so roaming and NAT
// rebinding need no other mechanism. Bad packets are dropped and counted,
// never answered.
package cab
