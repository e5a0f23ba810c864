package cab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// The control socket answers one request per connection: a line holding a
// command ("status" or "fdb"), answered with one JSON document. It is a
// unix stream socket of mode 0600, so only its owner (root, normally) can
// use it.

// Control-socket limits.
const (
	controlMaxRequest = 256
	controlTimeout    = 5 * time.Second
	controlMaxConns   = 16
)

// FDBEntry is one learned MAC address, for `cab status --fdb`.
type FDBEntry struct {
	MAC  string        `json:"mac"`
	VLAN uint16        `json:"vlan,omitempty"`
	Peer string        `json:"peer"` // "" for the local port
	Age  time.Duration `json:"age_ns"`
}

// FDB returns the cable's MAC table.
func (c *Cable) FDB() []FDBEntry {
	now := time.Now().UnixNano()
	var out []FDBEntry
	c.fdb.each(func(k macKey, e *fdbEntry) {
		fe := FDBEntry{MAC: net.HardwareAddr(k.mac[:]).String(), VLAN: k.vlan, Age: time.Duration(now - e.seen.Load())}
		if e.peer != nil {
			fe.Peer = e.peer.name
		}
		out = append(out, fe)
	})
	return out
}

// controlReply is the JSON answer to a control request.
type controlReply struct {
	Error  string     `json:"error,omitempty"`
	Status *Status    `json:"status,omitempty"`
	FDB    []FDBEntry `json:"fdb,omitempty"`
}

// ListenControl opens the control socket at path. A stale socket left by a
// cab that died is replaced; one that a running cab answers on is an error.
func ListenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: another cab is running with this name (pick another with --name)", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Windows has no mode bits: there the socket file takes the access
	// list of its directory.
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket: %w", err)
		}
	}
	return ln, nil
}

// ServeControl answers control requests on ln until ctx is done, then
// closes ln and removes its socket file.
func (c *Cable) ServeControl(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	sem := make(chan struct{}, controlMaxConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			conn.Close() // too many at once
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.answer(conn)
		}()
	}
}

func (c *Cable) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	r := bufio.NewReaderSize(conn, controlMaxRequest)
	line, err := r.ReadSlice('\n')
	var reply controlReply
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		reply.Error = fmt.Sprintf("request longer than %d bytes", controlMaxRequest)
	case err != nil:
		reply.Error = "request must be one line ending in a newline"
	default:
		switch cmd := strings.TrimSpace(string(line)); cmd {
		case "status":
			st := c.Status()
			reply.Status = &st
		case "fdb":
			reply.FDB = c.FDB()
		default:
			reply.Error = fmt.Sprintf("unknown request %q: use status or fdb", truncate(cmd, 40))
		}
	}
	json.NewEncoder(conn).Encode(reply)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// QueryControl sends cmd to the control socket at path and decodes the
// answer.
func QueryControl(path, cmd string) (*Status, []FDBEntry, error) {
	conn, err := net.DialTimeout("unix", path, controlTimeout)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, nil, fmt.Errorf("control socket %s: permission denied: run as root (or as the user cab runs as)", path)
		}
		return nil, nil, fmt.Errorf("control socket %s: %w (is cab running? pick the instance with --name)", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	var reply controlReply
	if err := json.NewDecoder(conn).Decode(&reply); err != nil {
		return nil, nil, fmt.Errorf("control socket: bad answer: %w", err)
	}
	if reply.Error != "" {
		return nil, nil, fmt.Errorf("control socket: %s", reply.Error)
	}
	return reply.Status, reply.FDB, nil
}
