package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"cab"
	"cab/crypto"
)

// plug joins stdin/stdout, in vde_plug's stream format, to the port spec,
// without crypto: a drop-in for vde_plug on either side of a dpipe. It ends
// with nil on end of stdin.
func plug(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cab plug", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cab plug SPEC\n\nJoin stdin/stdout (vde_plug's stream format) to the port SPEC:\ntap:NAME or vde:DIR[N]. Example: dpipe vde_plug /tmp/swA = ssh B cab plug vde:/tmp/swB\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		return errors.New("plug: give one port, e.g. cab plug vde:/tmp/sw")
	}
	if fs.Arg(0) == "stdio" {
		return errors.New("plug: stdio to stdio makes no cable: give tap:NAME or vde:DIR")
	}
	var id crypto.PublicKey
	port, err := cab.OpenPort(fs.Arg(0), id)
	if err != nil {
		return err
	}
	stdio, err := cab.OpenStdio()
	if err != nil {
		port.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return cab.Splice(ctx, port, stdio)
}
