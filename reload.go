package cab

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Reload applies settings s, read again (and checked), to the running
// cable: peers added, removed or with a new key take effect at once,
// unchanged peers keep their sessions; segments added, removed or changed,
// and the segments a peer may join, take effect at once too. A change that needs a restart (the
// port, the carriers, a key file…) is refused with the reason, and the
// running configuration stays.
func (su *Setup) Reload(s *Settings) (added, removed int, err error) {
	if k := changedSetting(su.s, s); k != "" {
		return 0, 0, fmt.Errorf("%s changed: that takes a restart (systemctl restart), not a reload", k)
	}
	if !slices.Equal(s.Servers, su.s.Servers) {
		return 0, 0, fmt.Errorf("the server address changed (%s → %s): that takes a restart", strings.Join(su.s.Servers, " "), strings.Join(s.Servers, " "))
	}
	var peers []PeerConfig
	if s.Role == "server" {
		if peers, err = s.peerConfigs(); err != nil {
			return 0, 0, err
		}
	} else {
		pc, err := s.serverPeer(su.psk, "server key")
		if err != nil {
			return 0, 0, err
		}
		pc.Dial, pc.Fallback = su.client.Dial, su.client.Fallback
		if pc.PSK == nil {
			pc.PSK = su.client.PSK
		}
		peers = []PeerConfig{pc}
	}
	if s.hasDefaultPort() != su.s.hasDefaultPort() {
		return 0, 0, fmt.Errorf("the local port (the default segment) was added or removed: that takes a restart")
	}
	segs, err := s.segmentConfigs()
	if err != nil {
		return 0, 0, err
	}
	if added, removed, err = su.Cable.SetPeers(peers); err != nil {
		return 0, 0, err
	}
	if _, _, err := su.Cable.SetSegments(segs, su.OpenSegment); err != nil {
		return added, removed, err
	}
	s.quicResetKey = su.s.quicResetKey
	su.s = s
	if s.Role == "client" {
		su.client = peers[0]
	}
	return added, removed, nil
}

// changedSetting names the first setting, other than the peers and the
// server's key (which a reload changes), that differs between a and b, or
// returns "".
func changedSetting(a, b *Settings) string {
	for _, st := range settingTable {
		if st.key == "server_key" {
			continue
		}
		if fmt.Sprintf("%#v", deref(st.ptr(a))) != fmt.Sprintf("%#v", deref(st.ptr(b))) {
			return st.describe()
		}
	}
	return ""
}

// deref is the value a setting's pointer points to.
func deref(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *bool:
		return *p
	case *time.Duration:
		return *p
	}
	panic(fmt.Sprintf("setting of type %T", p))
}
