// Package control is the control socket of a running cab: one request per
// connection, a line holding a command ("status" or "fdb"), answered with one
// JSON document. The socket is a unix stream socket of mode 0600, so only its
// owner (root, normally) can use it. `cab status` is its client.
package control

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

	"cab"
)

// Limits.
const (
	maxRequest = 256
	timeout    = 5 * time.Second
	maxConns   = 16
)

// A Source is what the socket reports on: a *cab.Cable.
type Source interface {
	Status() cab.Status
	FDB() []cab.FDBEntry
}

// reply is the JSON answer to a control request.
type reply struct {
	Error  string         `json:"error,omitempty"`
	Status *cab.Status    `json:"status,omitempty"`
	FDB    []cab.FDBEntry `json:"fdb,omitempty"`
}

// Listen opens the control socket at path. A stale socket left by a
// cab that died is replaced; one that a running cab answers on is an error.
func Listen(path string) (net.Listener, error) {
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

// Serve answers requests on ln about src until ctx is done, then closes
// ln, which removes its socket file.
func Serve(ctx context.Context, ln net.Listener, src Source) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	sem := make(chan struct{}, maxConns)
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
			answer(conn, src)
		}()
	}
}

func answer(conn net.Conn, src Source) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReaderSize(conn, maxRequest)
	line, err := r.ReadSlice('\n')
	var rep reply
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		rep.Error = fmt.Sprintf("request longer than %d bytes", maxRequest)
	case err != nil:
		rep.Error = "request must be one line ending in a newline"
	default:
		switch cmd := strings.TrimSpace(string(line)); cmd {
		case "status":
			st := src.Status()
			rep.Status = &st
		case "fdb":
			rep.FDB = src.FDB()
		default:
			rep.Error = fmt.Sprintf("unknown request %q: use status or fdb", truncate(cmd, 40))
		}
	}
	json.NewEncoder(conn).Encode(rep)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Query sends cmd to the control socket at path and decodes the answer.
func Query(path, cmd string) (*cab.Status, []cab.FDBEntry, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, nil, fmt.Errorf("control socket %s: permission denied: run as root (or as the user cab runs as)", path)
		}
		return nil, nil, fmt.Errorf("control socket %s: %w (is cab running? pick the instance with --name)", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	var rep reply
	if err := json.NewDecoder(conn).Decode(&rep); err != nil {
		return nil, nil, fmt.Errorf("control socket: bad answer: %w", err)
	}
	if rep.Error != "" {
		return nil, nil, fmt.Errorf("control socket: %s", rep.Error)
	}
	return rep.Status, rep.FDB, nil
}
