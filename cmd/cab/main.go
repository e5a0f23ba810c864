// Command cab is a secure cross-site Ethernet cable: it joins a local L2
// attachment (a TAP device) to remote cabs over encrypted, authenticated
// UDP.
//
//	cab server [-p PORT] [-s tap:NAME] [--psk FILE | --key FILE [--allow FILE]]
//	cab client [-s tap:NAME] [--psk FILE | --key FILE --server-key KEY] HOST[:PORT]
//	cab genkey -o site.key
//	cab pubkey < site.key
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"cab"
	"cab/control"
	"cab/crypto"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `cab is a secure cross-site Ethernet cable.

Usage:
  cab server [flags]              accept clients and join them to the local port
  cab client [flags] HOST[:PORT]  join the local port to a server
  cab run -f FILE [flags]         a server or client as the file's role says (cab@.service)
  cab status [--json|--fdb]       show the peers of a running cab
  cab plug SPEC                   join stdin/stdout (vde_plug's stream format) to a port,
                                  e.g. cab plug vde:/tmp/sw, a vde_plug drop-in for dpipe
  cab pipe [--name N]             join stdin/stdout to the running server (the far end of ssh://)
  cab genkey -o FILE              write a new private key (base64) into FILE, a new file of mode 0600
  cab genkey                      print a new private key
  cab pubkey                      read a private key on stdin, print its public key
  cab --version                   print the version

Run 'cab server --help' or 'cab client --help' for their flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		err = runCable(args[1:], true, stdout, stderr)
	case "client":
		err = runCable(args[1:], false, stdout, stderr)
	case "run":
		err = runFile(args[1:], stdout, stderr)
	case "status":
		err = status(args[1:], stdout, stderr)
	case "plug":
		err = plug(args[1:], stderr)
	case "pipe":
		err = pipe(args[1:], stdin, stdout, stderr)
	case "genkey":
		err = genkey(args[1:], stdout, stderr)
	case "pubkey":
		if err = noFlags(args[1:], stderr, "pubkey < FILE", "Read a private key (or a PSK) on stdin and print its public key."); err == nil {
			err = pubkey(stdin, stdout)
		}
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "cab %s\n", version)
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "cab: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if errors.Is(err, errLogged) {
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "cab: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// noFlags parses the arguments of a subcommand that takes none: --help
// prints its usage, anything else is a usage error.
func noFlags(args []string, stderr io.Writer, use, what string) error {
	fs := flag.NewFlagSet("cab "+use, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: cab %s\n\n%s\n", use, what) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	return nil
}

// genkey prints a new private key, or with -o FILE writes it into FILE,
// which it creates with mode 0600 and never overwrites: the key is never
// in a file that anyone else could open, not even for a moment (a shell's
// `> FILE` creates the file world-readable before cab runs).
func genkey(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the key into this new `file`, created with mode 0600 (an existing file is never overwritten)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cab genkey [-o FILE]\n\nPrint a new private key (base64), or write it into FILE, a new file of mode 0600.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cab genkey: unexpected %q: use cab genkey -o FILE\n", fs.Arg(0))
		return errUsage
	}
	k, err := crypto.GenerateKey()
	if err != nil {
		return err
	}
	if *out != "" {
		if err := crypto.CreateKeyFile(*out, k); err != nil {
			return fmt.Errorf("genkey: %w", err)
		}
		return nil
	}
	// A key redirected into a file is made private at once.
	if f, ok := stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if err := f.Chmod(0o600); err != nil {
				return fmt.Errorf("genkey: make the key file private: %w", err)
			}
		}
	}
	_, err = fmt.Fprintln(stdout, crypto.PublicKey(k).String())
	return err
}

func pubkey(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, 4096))
	if err != nil {
		return fmt.Errorf("pubkey: read stdin: %w", err)
	}
	k, err := crypto.ParseKey(string(b))
	if err != nil {
		return fmt.Errorf("pubkey: stdin: %w (give it a key from `cab genkey`)", err)
	}
	_, err = fmt.Fprintln(stdout, crypto.PrivateKey(k).Public().String())
	return err
}

func newLogger(s *cab.Settings, stderr io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if s.Verbose {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" { // journald stamps lines itself
		hopts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(stderr, hopts))
	}
	return slog.New(slog.NewTextHandler(stderr, hopts))
}

// runCable runs a server or a client: the settings from the flags and the
// file, then serve. Once the logger exists, with --log-format json, an
// error is a JSON line too.
func runCable(args []string, server bool, stdout, stderr io.Writer) error {
	s, err := parseFlags(args, server, stderr)
	if err != nil {
		return err
	}
	log := newLogger(s, stderr)
	// Libraries that write with the log package (quic-go warns that way
	// of small UDP buffers) go through the same handler.
	slog.SetDefault(log)
	err = serve(args, s, log, stderr)
	if err != nil && s.LogFormat == "json" {
		log.Error("cab: " + err.Error())
		return errLogged
	}
	return err
}

// errLogged is an error already logged.
var errLogged = errors.New("logged")

// serve runs the cable s describes (cab.Open), and around it the control
// socket, metrics, systemd notifications and reloads on SIGHUP.
func serve(args []string, s *cab.Settings, log *slog.Logger, stderr io.Writer) error {
	su, err := cab.Open(s, log)
	if err != nil {
		return err
	}
	gso, gro := su.UDPOffloads()
	w := bufio.NewWriter(stderr)
	for _, n := range su.Notes {
		if s.LogFormat == "json" {
			log.Info(n)
		} else {
			fmt.Fprintf(w, "cab: %s\n", n)
		}
	}
	if n := offloadNote(runtime.GOOS, flagsGiven(args), s.UDPGSO, s.UDPGRO); n != "" {
		if s.LogFormat == "json" {
			log.Info(n)
		} else {
			fmt.Fprintf(w, "cab: %s\n", n)
		}
	}
	w.Flush()
	log.Info("cable up", "role", s.Role, "port", s.PortDescription(), "transports", strings.Join(su.Carriers.Names, ", "), "key", su.PublicKey.Short(),
		"udp_gso", gso, "udp_gro", gro, "tap_offload", tapOffloads(su.Port))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if s.Metrics != "" {
		if err := serveMetrics(ctx, s.Metrics, su.Cable, log); err != nil {
			su.Close()
			return err
		}
	}
	sock := cab.ControlSocket(s.Name)
	if ln, err := control.Listen(sock); err != nil {
		log.Warn("no control socket: cab status will not see this cable", "err", err)
	} else {
		go control.Serve(ctx, ln, su.Cable)
		defer os.Remove(sock)
	}
	notify, err := newNotifier()
	if err != nil {
		log.Warn("no systemd notifications", "err", err)
	}
	rl := &reloader{args: args, server: s.Role == "server", setup: su, log: log, notify: notify}
	go rl.run(ctx)
	nctx, nstop := context.WithCancel(ctx)
	notified := make(chan struct{})
	go func() {
		notify.run(nctx, su.Cable)
		close(notified)
	}()
	err = su.Run(ctx)
	nstop()
	<-notified // STOPPING=1 is out
	if err != nil {
		return err
	}
	log.Info("cable down")
	return nil
}

// runFile runs the cable a configuration file describes: a server or a
// client as its role key says.
func runFile(args []string, stdout, stderr io.Writer) error {
	const use = "Usage: cab run -f FILE [flags]\n\nRun the server or client that FILE describes (its role key); flags win over the\nfile. The flags are those of cab server --help or cab client --help."
	path := ""
	for i, a := range args {
		switch {
		case a == "-h" || a == "-help" || a == "--help":
			fmt.Fprintln(stderr, use)
			return flag.ErrHelp
		case a == "-f" || a == "--f":
			if i+1 < len(args) {
				path = args[i+1]
			}
		case strings.HasPrefix(a, "-f="), strings.HasPrefix(a, "--f="):
			path = a[strings.Index(a, "=")+1:]
		}
	}
	if path == "" {
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	s, err := cab.ParseFile(path)
	if err != nil {
		return err
	}
	if s.Role == "" {
		return fmt.Errorf("%s:1: no role: add role = \"server\" or role = \"client\"", path)
	}
	return runCable(args, s.Role == "server", stdout, stderr)
}

// controlDir holds the control sockets.
var controlDir = cab.RunDir

// tapOffloads names the offloads of a TAP port, for the log: "off" for a
// TAP without them, "" for other ports.
func tapOffloads(port any) string {
	if t, ok := port.(interface{ Offloads() string }); ok {
		if s := t.Offloads(); s != "" {
			return s
		}
		return "off"
	}
	return ""
}
