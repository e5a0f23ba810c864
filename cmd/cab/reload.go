package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"cab"
	"cab/crypto"
)

// reloader re-reads the configuration on SIGHUP (systemctl reload): peers
// added, removed or with a new key take effect at once, unchanged peers keep
// their sessions. A change that needs a restart (the port, the transports,
// a key file…) or a configuration that does not parse is refused with a
// clear error, and the running configuration stays.
type reloader struct {
	args   []string
	server bool
	cur    *options
	pos    []string
	cable  *cab.Cable
	client cab.PeerConfig // a client's server peer, with its dialers
	psk    *crypto.Secret
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
	o, pos, err := parseFlags(r.args, r.server, io.Discard)
	if err != nil {
		return err
	}
	if field := changedField(r.cur, o); field != "" {
		return fmt.Errorf("%s changed: that takes a restart (systemctl restart), not a reload", field)
	}
	if !slices.Equal(pos, r.pos) {
		return fmt.Errorf("the server address changed (%s → %s): that takes a restart", strings.Join(r.pos, " "), strings.Join(pos, " "))
	}
	var peers []cab.PeerConfig
	if r.server {
		if err := o.loadPeerPSKs(); err != nil {
			return err
		}
		peers = o.peers
	} else {
		pc := o.serverPeer // its keepalive, PSK, allowed MACs and VLANs as the file says now
		pc.Name, pc.Dial, pc.Fallback = r.client.Name, r.client.Dial, r.client.Fallback
		if pc.PSK == nil {
			pc.PSK = r.client.PSK
		}
		switch {
		case o.serverKey != "":
			b, err := crypto.ParsePublicKey(o.serverKey)
			if err != nil {
				return fmt.Errorf("server key: %w", err)
			}
			pc.PublicKey = b
		case r.psk != nil:
			pc.PublicKey = crypto.PSKStatic(*r.psk).Public()
		}
		if o.serverName != "" {
			pc.Name = o.serverName
		}
		peers = []cab.PeerConfig{pc}
	}
	added, removed, err := r.cable.SetPeers(peers)
	if err != nil {
		return err
	}
	r.cur, r.pos = o, pos
	if !r.server {
		r.client = peers[0]
	}
	r.log.Info("reloaded", "peers_added", added, "peers_removed", removed)
	return nil
}

// changedField names the first setting, other than the peers, that
// differs between a and b, or returns "".
func changedField(a, b *options) string {
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		switch name {
		case "peers", "serverKey", "serverName", "serverPeer", "setByFlag":
			continue // what a reload changes
		case "quicResetKey":
			continue // derived from the key at the start, not a setting
		}
		// fmt reads unexported fields, which reflect's Interface may not.
		if fmt.Sprintf("%#v", va.Field(i)) != fmt.Sprintf("%#v", vb.Field(i)) {
			if k, ok := settingNames[name]; ok {
				return k
			}
			return name
		}
	}
	return ""
}

// settingNames are the file keys (and flags) of the options, for messages.
var settingNames = map[string]string{
	"spec": "local (-s)", "port": "listen_port (-p)", "listen": "listen (-l)", "transports": "transport",
	"pskFile": "psk", "keyFile": "key", "allowFile": "allow", "stateDir": "state_dir", "keepalive": "keepalive",
	"isolate": "isolate", "fdbAge": "fdb_age", "maxMACs": "max_macs", "floodRate": "flood_rate", "bpdu": "bpdu",
	"mssClamp": "mss_clamp", "mtu": "mtu", "udpGSO": "udp_gso", "udpGRO": "udp_gro", "workers": "crypto_workers", "metrics": "metrics",
	"name": "name", "logFormat": "log_format", "verbose": "verbose (-v)", "vdeShared": "vde_shared_port",
	"sshCommand": "ssh_command", "sshRemote": "ssh_remote", "quicCert": "quic_cert", "quicKey": "quic_key",
	"quicALPN": "quic_alpn", "quicSNI": "quic_sni",
	"dnsZone": "dns_zone", "dnsListen": "dns_listen", "resolver": "resolver", "dnsNoData": "dns_nodata",
}
