//go:build linux

// Package cabtest holds cab's integration tests: every test builds two or
// more sites as network namespaces joined by a veth underlay, runs the real
// cab binary in them over real TAP devices, and checks what crosses the
// cable. The tests need root and are skipped with -short.
//
// Addresses: underlay 198.51.100.0/24 and 2001:db8::/64, overlay (the TAPs)
// 192.0.2.0/24, all only inside namespaces the tests create and delete.
package cabtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cabBin is the cab binary built by TestMain; skipReason is set instead
// when the tests cannot run.
var (
	cabBin     string
	skipReason string
)

func TestMain(m *testing.M) {
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "integration tests (network namespaces, TAP devices) skipped with -short"
	case os.Geteuid() != 0:
		msg := "\n*** cab integration tests need root (network namespaces, TAP devices): run them with sudo ***\n"
		if os.Getenv("CI") == "true" {
			fmt.Fprint(os.Stderr, msg+"*** CI=true: failing instead of skipping ***\n\n")
			os.Exit(1)
		}
		fmt.Fprint(os.Stderr, msg+"\n")
		skipReason = "not root: integration tests need network namespaces and TAP devices"
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "cabtest-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cabtest: %v\n", err)
		os.Exit(1)
	}
	cabBin = filepath.Join(dir, "cab")
	build := exec.Command("go", "build", "-o", cabBin, "cab/cmd/cab")
	build.Dir = ".."
	if bin := os.Getenv("CABTEST_BIN"); bin != "" {
		// Another cab binary (an older one, to measure what a change
		// fixed).
		build = exec.Command("cp", bin, cabBin)
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cabtest: go build cab/cmd/cab: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRoot skips t when TestMain decided the tests cannot run.
func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// randomID returns 8 random hex digits, to keep names unique across
// parallel tests and concurrent runs.
func randomID(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// run runs a short command with a bounded time and returns its combined
// output.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// mustRun is run that fails t on error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(10*time.Second, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A site is one network namespace with a private directory for keys and
// state, and the underlay address it got from link.
type site struct {
	ns   string // namespace name, also the cab --name
	dir  string // private directory for keys, state, captures
	ulIf string // underlay veth inside the namespace
	v4   string // underlay IPv4 address
	v6   string // underlay IPv6 address
	host *site  // a host namespace behind the site, when a test makes one
}

// newNetns creates a namespace named cab-<random>-<suffix> with lo up, and
// deletes it when t ends.
func newNetns(t *testing.T, suffix string) *site {
	t.Helper()
	needRoot(t)
	s := &site{ns: "cab-" + randomID(t) + "-" + suffix, dir: t.TempDir()}
	mustRun(t, "ip", "netns", "add", s.ns)
	t.Cleanup(func() {
		if _, err := run(10*time.Second, "ip", "netns", "del", s.ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	mustRun(t, "ip", "-n", s.ns, "link", "set", "lo", "up")
	return s
}

// newPair returns two sites joined by a veth underlay: a (the server side)
// has 198.51.100.1 and 2001:db8::1, b has .2 and ::2.
func newPair(t *testing.T) (a, b *site) {
	t.Helper()
	a, b = newNetns(t, "a"), newNetns(t, "b")
	id := randomID(t)
	a.ulIf, b.ulIf = "ul"+id+"a", "ul"+id+"b"
	mustRun(t, "ip", "link", "add", a.ulIf, "netns", a.ns, "type", "veth", "peer", "name", b.ulIf, "netns", b.ns)
	for i, s := range []*site{a, b} {
		s.v4 = fmt.Sprintf("198.51.100.%d", i+1)
		s.v6 = fmt.Sprintf("2001:db8::%d", i+1)
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.v4+"/24", "dev", s.ulIf)
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.v6+"/64", "dev", s.ulIf, "nodad")
		mustRun(t, "ip", "-n", s.ns, "link", "set", s.ulIf, "up")
	}
	return a, b
}

// path returns name inside the site's private directory.
func (s *site) path(name string) string { return filepath.Join(s.dir, name) }

// cab starts cab in the site's namespace with args, adding --name (so the
// control sockets of parallel tests do not collide) and --state-dir (so
// nothing is written to /var/lib/cab).
func (s *site) cab(t *testing.T, args ...string) *proc {
	t.Helper()
	args = append(args, "--name", s.ns, "--state-dir", s.path("state"))
	p := start(t, s.ns, cabBin, args...)
	sock := filepath.Join("/run/cab", s.ns+".sock")
	t.Cleanup(func() { os.Remove(sock) }) // left behind only by SIGKILL
	return p
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A proc is a process running in a namespace.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{} // closed when the process has exited
	err            error         // from Wait, once done is closed
}

// start runs name with args in namespace ns (`ip netns exec` execs in
// place, so the PID is the command's own). When t ends, the process gets
// SIGTERM, then SIGKILL after 5 s, and its output is logged if t failed.
func start(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(name) + " " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.signal(syscall.SIGTERM)
			if !p.wait(5 * time.Second) {
				t.Errorf("%s: no exit 5 s after SIGTERM; killing it", p.name)
				p.signal(syscall.SIGKILL)
				p.wait(5 * time.Second)
			}
		}
		if t.Failed() {
			t.Logf("--- %s (pid %d, %s)\nstdout:\n%s\nstderr:\n%s", p.name, p.cmd.Process.Pid, p.state(), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// signal sends sig to the process, by its PID.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		syscall.Kill(p.cmd.Process.Pid, sig)
	}
}

// wait waits at most d for the process to exit and reports whether it did.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode returns the exit code of an exited process, -1 if a signal
// ended it.
func (p *proc) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) state() string {
	if !p.exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// output returns everything the process wrote so far.
func (p *proc) output() string { return p.stdout.String() + p.stderr.String() }

// waitFor polls cond every 100 ms until it is true or timeout has passed,
// and reports whether it became true.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ping sends count pings from ns to addr, 0.2 s apart, and returns how many
// replies came back.
func ping(t *testing.T, ns, addr string, count int, extra ...string) int {
	t.Helper()
	args := append([]string{"netns", "exec", ns, "ping", "-n", "-c", strconv.Itoa(count), "-W", "1", "-i", "0.2"}, extra...)
	out, _ := run(time.Duration(count)*time.Second+10*time.Second, "ip", append(args, addr)...)
	m := regexp.MustCompile(`(\d+) (packets )?received`).FindStringSubmatch(out)
	if m == nil {
		t.Logf("ping from %s to %s: no summary, counting no replies:\n%s", ns, addr, out)
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

const tapDev = "cab0"

// setupTap waits for cab (p) to create the TAP in s's namespace and bring it
// up, then gives it addr.
func setupTap(t *testing.T, s *site, p *proc, addr string) {
	t.Helper()
	var flags string
	ok := waitFor(10*time.Second, func() bool {
		if p.exited() {
			return true
		}
		out, err := run(5*time.Second, "ip", "-n", s.ns, "-o", "link", "show", "dev", tapDev)
		flags = out
		return err == nil && regexp.MustCompile(`[<,]UP[,>]`).MatchString(out)
	})
	if p.exited() {
		t.Fatalf("%s exited (%s) before its TAP %s was up", p.name, p.state(), tapDev)
	}
	if !ok {
		t.Fatalf("TAP %s not up in %s within 10 s: %s", tapDev, s.ns, flags)
	}
	mustRun(t, "ip", "-n", s.ns, "addr", "add", addr+"/24", "dev", tapDev)
}

// tapExists reports whether the TAP device exists in s's namespace.
func tapExists(s *site) bool {
	_, err := run(5*time.Second, "ip", "-n", s.ns, "link", "show", "dev", tapDev)
	return err == nil
}

const peerUp = `msg="peer up"`

// waitPeerUp waits until every p has logged "peer up".
func waitPeerUp(t *testing.T, timeout time.Duration, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		if !waitFor(timeout, func() bool { return strings.Contains(p.stderr.String(), peerUp) || p.exited() }) || p.exited() {
			t.Fatalf("%s: no %s within %v (%s)", p.name, peerUp, timeout, p.state())
		}
	}
}

// waitPing waits until a ping from ns to addr gets a reply.
func waitPing(t *testing.T, timeout time.Duration, ns, addr string) {
	t.Helper()
	if !waitFor(timeout, func() bool { return ping(t, ns, addr, 1) == 1 }) {
		t.Fatalf("no ping reply from %s to %s within %v", ns, addr, timeout)
	}
}

// genkey writes a new key from `cab genkey` to a mode 0600 file at path.
func genkey(t *testing.T, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cabBin, "genkey")
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cab genkey: %v\n%s", err, stderr.String())
	}
	return path
}

// pubkey returns the public key of the key file at path, from `cab pubkey`.
func pubkey(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cabBin, "pubkey")
	cmd.Stdin = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cab pubkey < %s: %v\n%s", path, err, stderr.String())
	}
	k := strings.TrimSpace(string(out))
	if k == "" || strings.ContainsAny(k, " \n") {
		t.Fatalf("cab pubkey < %s printed %q, want one key", path, out)
	}
	return k
}

// inNetns runs f on a thread that is in namespace ns; sockets f makes
// belong to ns.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	runtime.LockOSThread()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns, err)
	}
	f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine rather
		// than run other goroutines in the wrong namespace.
		t.Fatalf("setns back: %v", err)
	}
	runtime.UnlockOSThread()
}

// listenUDPIn binds a UDP socket on port (all addresses) inside namespace
// ns, and closes it when t ends.
func listenUDPIn(t *testing.T, ns string, port int) {
	t.Helper()
	var c net.PacketConn
	var err error
	inNetns(t, ns, func() { c, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port)) })
	if err != nil {
		t.Fatalf("listen udp :%d in %s: %v", port, ns, err)
	}
	t.Cleanup(func() { c.Close() })
}

// publicCopy copies the cab binary into a directory anyone may read, for
// running it as an unprivileged user, and returns its path.
func publicCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cab-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(cabBin)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "cab")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
