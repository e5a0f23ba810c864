package cab

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// What differs between the systems cab runs on: where it keeps its sockets
// and its state. The functions take the system's name, so that the tests
// check every system's answer on Linux.

// RunDir holds the control sockets (NAME.sock) of running cabs and the
// pipe sockets of the ssh:// transport (NAME.pipe).
var RunDir = RunDirFor(runtime.GOOS, os.Getenv)

// RunDirFor returns the control directory of the system goos:
// /run/cab on Linux, /var/run/cab on FreeBSD and macOS (which have no
// /run), and %ProgramData%\cab on Windows, where Go listens on unix
// sockets (AF_UNIX, Windows 10 1803 and later).
func RunDirFor(goos string, getenv func(string) string) string {
	switch goos {
	case "linux":
		return "/run/cab"
	case "windows":
		pd := getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return strings.TrimRight(pd, `\`) + `\cab`
	}
	return "/var/run/cab"
}

// StateDirFor returns the state directory of the system goos, for a
// process with effective user id euid: $STATE_DIRECTORY (systemd's
// StateDirectory=) when set; on Windows %LOCALAPPDATA%\cab (private to the
// account, the service account's too); for root /var/lib/cab on Linux,
// /var/db/cab on FreeBSD, /Library/Application Support/cab on macOS;
// otherwise $XDG_STATE_HOME/cab or ~/.local/state/cab.
func StateDirFor(goos string, euid int, getenv func(string) string, home func() (string, error)) (string, error) {
	if d := getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0], nil
	}
	if goos == "windows" {
		if d := getenv("LOCALAPPDATA"); d != "" {
			return strings.TrimRight(d, `\`) + `\cab`, nil
		}
		return "", errors.New("no state directory (%LOCALAPPDATA% is not set): set --state-dir")
	}
	if euid == 0 {
		switch goos {
		case "linux":
			return "/var/lib/cab", nil
		case "darwin":
			return "/Library/Application Support/cab", nil
		}
		return "/var/db/cab", nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "cab"), nil
	}
	h, err := home()
	if err != nil {
		return "", errors.New("no state directory: set --state-dir")
	}
	return filepath.Join(h, ".local", "state", "cab"), nil
}

// StateDirHelp says what StateDirFor picks on this system, for --help.
func StateDirHelp() string {
	switch runtime.GOOS {
	case "windows":
		return `%LOCALAPPDATA%\cab`
	case "linux":
		return "/var/lib/cab as root, else $XDG_STATE_HOME/cab"
	case "darwin":
		return "/Library/Application Support/cab as root, else $XDG_STATE_HOME/cab"
	}
	return "/var/db/cab as root, else $XDG_STATE_HOME/cab"
}
