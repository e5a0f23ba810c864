package cab

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// atomicCounter is one counter of drops.
type atomicCounter = atomic.Uint64

// dropReason says why a packet or frame was dropped.
type dropReason int

const (
	dropRunt dropReason = iota
	dropNoSession
	dropAuth
	dropReplay
	dropTooBig
	dropRateLimited
	dropQueueFull
	dropNotAllowed
	dropHandshakeReplay
	dropMACLimit
	dropIsolated
	dropMACConflict
	dropBPDU
	dropFragment
	dropCookie
	dropDuplicateKey
	dropFloodLimit
	dropFloodBudget
	dropFairShare
	dropSegment
	dropMalformed
	numDropReasons
)

var dropNames = [numDropReasons]string{
	dropRunt:            "runt",
	dropNoSession:       "no session",
	dropAuth:            "auth",
	dropReplay:          "replay",
	dropTooBig:          "too big",
	dropRateLimited:     "rate limited",
	dropQueueFull:       "queue full",
	dropNotAllowed:      "not allowed",
	dropHandshakeReplay: "handshake replay",
	dropMACLimit:        "mac limit",
	dropIsolated:        "isolated",
	dropMACConflict:     "mac conflict",
	dropBPDU:            "bpdu",
	dropFragment:        "fragment",
	dropCookie:          "cookie sent",
	dropDuplicateKey:    "duplicate key",
	dropFloodLimit:      "flood limit",
	dropFloodBudget:     "flood budget",
	dropFairShare:       "fair share",
	dropSegment:         "not in segment",
	dropMalformed:       "malformed",
}

func (r dropReason) String() string { return dropNames[r] }

// DropReasons lists the reasons Status counts drops by, as it names them.
func DropReasons() []string { return dropNames[:] }

// dropper counts drops by peer and reason, and logs them at debug level,
// once a second at most.
type dropper struct {
	unattributed [numDropReasons]atomic.Uint64 // drops of no known peer
	log          *slog.Logger
	gate         atomic.Int64 // when the last debug line was logged
}

// drop counts one packet or frame dropped for r, against p when known.
func (d *dropper) drop(p *peer, r dropReason) {
	if p != nil {
		p.stats.drops[r].Add(1)
	} else {
		d.unattributed[r].Add(1)
	}
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		now := time.Now().UnixNano()
		last := d.gate.Load()
		if now-last > int64(time.Second) && d.gate.CompareAndSwap(last, now) {
			name := ""
			if p != nil {
				name = p.name()
			}
			d.log.Debug("dropped", "reason", r.String(), "peer", name)
		}
	}
}
