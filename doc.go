// Package cab is the core of cab, a secure cross-site Ethernet cable.
//
// A Cable joins one local L2 attachment (a bridgeif.Port: a TAP device, a VDE
// switch port, stdio) to one or more remote cabs (peers) over one or more
// carriers (transport.Conn: UDP by default), and switches Ethernet frames
// between them. Every frame that leaves the machine is sealed with the keys
// of a Noise IKpsk2 session (package crypto) with the peer it goes to.
//
// Frame flow:
//
//	port ──ReadBatch──▶ port loop: learn src MAC (local) · fdb lookup
//	                    · seal per destination peer · WriteBatch per conn ──▶ wire
//	wire ──ReadBatch──▶ conn loop: header · index → session · Open · update path
//	                    · learn src MAC (peer) · deliver to port, or re-seal to
//	                      another peer (split horizon; none if isolated) ──▶ port
//	timer loop: keepalives, handshake retries, rekey, expiry, fdb aging
//
// One goroutine per blocking reader; the work is done inline. A peer's path
// (the conn and addr it is reached at) changes only after a packet from it
// has authenticated and passed the replay window, so roaming and NAT
// rebinding need no other mechanism. Bad packets are dropped and counted,
// never answered.
package cab
