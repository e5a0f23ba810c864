package bridgeif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The classic vde_switch control protocol (research: vde.md, section 1):
// a request on DIR/ctl, host byte order, one write:
//
//	magic 0xfeedface (4) | version 3 (4) | type = port<<8 | 0 (4)
//	| sockaddr_un of our datagram socket | description (no NUL)
//
// answered by the sockaddr_un of the switch's data socket for this port,
// DIR/NNN.F. Then one frame per unix datagram. The switch frees the port
// when the control stream closes, and cab notices the switch dying when
// the stream ends. The sockaddr_un is the host's own struct (see
// sunLayout): 110 bytes on Linux, 106 on FreeBSD and macOS.
const (
	vdeMagic   = 0xfeedface
	vdeVersion = 3
	vdeMaxReq  = 256 // the switch reads at most 256 bytes
	afUnix     = 1   // AF_UNIX, the same on every system cab runs on
	// VDEMaxFrame is the longest frame a classic vde_switch passes whole
	// (14 + 1504); it truncates longer datagrams, so the port drops them.
	VDEMaxFrame = 1518
)

// VDEOptions tune OpenVDE. The zero value asks for any free port.
type VDEOptions struct {
	Port        int           // switch port to ask for; 0: any free port
	Description string        // shown by the switch's port/print; default "cab"
	Timeout     time.Duration // for the switch's answer; default 2s
	Logger      *slog.Logger  // for "switch gone" and "switch back"; default slog.Default()
}

// sunLayout is a system's struct sockaddr_un, which the vde protocol
// carries as the host lays it out. Both layouts put the path at byte 2.
type sunLayout struct {
	size int  // sizeof(struct sockaddr_un)
	bsd  bool // sun_len (1 byte), then sun_family (1 byte); else a 2-byte sun_family
}

var (
	sunLinux = sunLayout{size: 110}            // sa_family_t sun_family; char sun_path[108]
	sunBSD   = sunLayout{size: 106, bsd: true} // FreeBSD, macOS: u_char sun_len; sa_family_t (u_char) sun_family; char sun_path[104]
)

// nativeSun is this system's layout, and vdeSunLen its size.
var (
	nativeSun = sunFor(runtime.GOOS)
	vdeSunLen = nativeSun.size
)

// sunFor returns the layout of the system goos.
func sunFor(goos string) sunLayout {
	switch goos {
	case "freebsd", "darwin", "netbsd", "openbsd", "dragonfly":
		return sunBSD
	}
	return sunLinux
}

// maxPath is the longest socket path the layout holds, with its NUL.
func (l sunLayout) maxPath() int { return l.size - 2 - 1 }

// encodeRequest builds a v3 request for port, for our socket at sun.
func encodeRequest(port int, sun, descr string) []byte {
	return nativeSun.encodeRequest(port, sun, descr)
}

func (l sunLayout) encodeRequest(port int, sun, descr string) []byte {
	fixed := 12 + l.size
	if len(descr) > vdeMaxReq-fixed {
		descr = descr[:vdeMaxReq-fixed]
	}
	b := make([]byte, fixed, fixed+len(descr))
	binary.NativeEndian.PutUint32(b[0:], vdeMagic)
	binary.NativeEndian.PutUint32(b[4:], vdeVersion)
	binary.NativeEndian.PutUint32(b[8:], uint32(port)<<8)
	if l.bsd {
		b[12], b[13] = byte(l.size), afUnix
	} else {
		binary.NativeEndian.PutUint16(b[12:], afUnix)
	}
	copy(b[14:14+l.maxPath()], sun)
	return append(b, descr...)
}

// parseReply reads the switch's answer: the path of its data socket, and
// the port number in its name (DIR/NNN.F).
func parseReply(b []byte) (path string, port int, err error) {
	return nativeSun.parseReply(b)
}

func (l sunLayout) parseReply(b []byte) (path string, port int, err error) {
	if len(b) != l.size || l.bsd && b[1] != afUnix || !l.bsd && binary.NativeEndian.Uint16(b[0:2]) != afUnix {
		return "", 0, errors.New("vde: the switch's answer is not a unix socket address")
	}
	name := b[2:]
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	if len(name) == 0 {
		return "", 0, errors.New("vde: the switch answered with an empty path")
	}
	path = string(name)
	base := filepath.Base(path)
	if i := strings.IndexByte(base, '.'); i > 0 && strings.Trim(base[:i], "0123456789") == "" {
		port, _ = strconv.Atoi(base[:i]) // NNN.F; anything else: port unknown (0)
	}
	return path, port, nil
}

// ParseVDESpec parses "DIR", "DIR[N]" or vdeplug4's "vde:///DIR[N]".
func ParseVDESpec(s string) (dir string, port int, err error) {
	s = strings.TrimPrefix(s, "vde://")
	dir = s
	if i := strings.IndexByte(s, '['); i >= 0 {
		if !strings.HasSuffix(s, "]") {
			return "", 0, fmt.Errorf("vde %q: a port goes in brackets at the end: DIR[N]", s)
		}
		dir = s[:i]
		if p := s[i+1 : len(s)-1]; p != "" {
			port, err = strconv.Atoi(p)
			if err != nil || port < 0 || port > 0xffffff {
				return "", 0, fmt.Errorf("vde %q: port %q is not a number", s, p)
			}
		}
	}
	if dir == "" {
		return "", 0, fmt.Errorf("vde %q: no switch directory", s)
	}
	return dir, port, nil
}
