package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"cab"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): datagrams of
// KEY=VALUE lines to the unix socket in $NOTIFY_SOCKET. A nil notifier
// (not started by systemd with Type=notify) does nothing.
type notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration // from $WATCHDOG_USEC, when meant for this process
}

// newNotifier returns the notifier of this process, or nil.
func newNotifier() (*notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	n := &notifier{conn: c}
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n, nil
}

// send sends one notification, such as "READY=1".
func (n *notifier) send(state string) {
	if n != nil {
		n.conn.Write([]byte(state))
	}
}

// run tells systemd the cable is ready, keeps STATUS= up to date with the
// peers that are up, pets the watchdog while the cable's data path is
// healthy (and stops petting it when not, so that systemd restarts cab),
// and says STOPPING=1 when ctx ends.
func (n *notifier) run(ctx context.Context, c *cab.Cable) {
	if n == nil {
		return
	}
	status := func() string {
		st := c.Status()
		up := 0
		for _, p := range st.Peers {
			if p.Up {
				up++
			}
		}
		return fmt.Sprintf("STATUS=%d of %d peers up, %d MACs learned", up, len(st.Peers), st.FDB)
	}
	last := status()
	n.send("READY=1\n" + last)
	every := 5 * time.Second
	if n.watchdog > 0 {
		every = min(every, n.watchdog/2)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.send("STOPPING=1")
			return
		case <-t.C:
		}
		if n.watchdog > 0 && c.Healthy() {
			n.send("WATCHDOG=1")
		}
		if s := status(); s != last {
			last = s
			n.send(s)
		}
	}
}
