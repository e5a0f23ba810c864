package main

import (
	"strings"
)

// What differs between the systems cab runs on: where it keeps its sockets
// and its state, and which settings need Linux. The functions take the
// system's name, so that the tests check every system's answer on Linux.

// offloadNote returns, on a system other than Linux, a note for the UDP
// offloads asked for by flag (udp-gso, udp-gro): they need Linux, and the
// UDP carrier sends and receives one datagram per system call. Left at
// their default ("on": where the kernel has them) they need no note.
func offloadNote(goos string, setByFlag map[string]bool, gso, gro string) string {
	if goos == "linux" {
		return ""
	}
	var asked []string
	if setByFlag["udp-gso"] && gso == "on" {
		asked = append(asked, "--udp-gso")
	}
	if setByFlag["udp-gro"] && gro == "on" {
		asked = append(asked, "--udp-gro")
	}
	if len(asked) == 0 {
		return ""
	}
	verb := " needs"
	if len(asked) > 1 {
		verb = " need"
	}
	return strings.Join(asked, " and ") + verb + " Linux: here the UDP carrier sends and receives one datagram per system call"
}

// flagsGiven returns the names of the flags in args ("udp-gso" for
// --udp-gso=on).
func flagsGiven(args []string) map[string]bool {
	m := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			m[name] = true
		}
	}
	return m
}
