package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"cab"
)

// reloader re-reads the configuration on SIGHUP (systemctl reload) and
// applies it (cab.Setup.Reload): peers added, removed or with a new key take
// effect at once, unchanged peers keep their sessions. A change that needs
// a restart (the port, the transports, a key file…) or a configuration that
// does not parse is refused with a clear error, and the running
// configuration stays.
type reloader struct {
	args   []string
	server bool
	setup  *cab.Setup
	log    *slog.Logger
	notify *notifier
}

func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		r.notify.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
		if err := r.reload(); err != nil {
			r.log.Error("reload refused; the running configuration stays", "err", err)
		}
		r.notify.send("READY=1")
	}
}

// reload applies the configuration as it is now.
func (r *reloader) reload() error {
	s, err := parseFlags(r.args, r.server, io.Discard)
	if err != nil {
		return err
	}
	added, removed, err := r.setup.Reload(s)
	if err != nil {
		return err
	}
	r.log.Info("reloaded", "peers_added", added, "peers_removed", removed)
	return nil
}
