package main

import (
	"cab"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
)

// pipe joins stdin and stdout to the running server's pipe socket, bytes
// as they come: the remote command of the ssh:// transport. The stream
// carries cab's sealed packets, so the keys and the Noise session run end
// to end between the client and the server, inside SSH.
func pipe(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cab pipe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "cab", "instance `name` of the server (its --name)")
	socket := fs.String("socket", "", "pipe socket `path` (default "+controlDir+"/NAME.pipe)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cab pipe [--name N]\n\nJoin stdin/stdout to the running cab server, for the ssh:// transport:\nthe client runs it on the server's host through ssh.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if err := cab.CheckName(*name); err != nil {
		return err
	}
	path := *socket
	if path == "" {
		path = cab.PipeSocket(*name)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("pipe: %w: is cab server --name %s running on this host?", err, *name)
	}
	uc := c.(*net.UnixConn)
	// stdin's end is passed on (CloseWrite); the server then ends the
	// stream, and so the socket's end ends the pipe.
	go func() {
		io.Copy(uc, stdin)
		uc.CloseWrite()
	}()
	_, err = io.Copy(stdout, uc)
	uc.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
