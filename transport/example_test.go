package transport_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tproxy/tproxy/transport"
)

// An in-memory worker needs no binary: Serve plays the worker's main. Here
// it shouts back every line until its input ends.
func ExampleInMemory() {
	tr := &transport.InMemory{
		Serve: func(ctx context.Context, rw io.ReadWriteCloser) error {
			sc := bufio.NewScanner(rw)
			for sc.Scan() {
				fmt.Fprintln(rw, strings.ToUpper(sc.Text()))
			}
			return sc.Err()
		},
	}
	p, err := tr.Start(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Fprintln(p, "hello, worker")
	reply, _ := bufio.NewReader(p).ReadString('\n')
	fmt.Print(reply)

	if err := p.Close(); err != nil { // the worker sees EOF and returns
		fmt.Println(err)
	}
	fmt.Println(p.Exit())
	// Output:
	// HELLO, WORKER
	// exit status 0
}

// A Subprocess runs a worker binary; its stderr goes to the host's log and
// its tail into error messages.
func ExampleSubprocess() {
	tr := &transport.Subprocess{
		Path:         "/usr/local/bin/tproxy-worker",
		Env:          []string{"PATH=/usr/bin:/bin"}, // forward nothing else
		Logger:       slog.Default().With("worker", "tproxy-worker"),
		CloseTimeout: 2 * time.Second,
	}
	p, err := tr.Start(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	// ... exchange JSON-RPC frames with p.Write and p.Read ...

	<-p.Done()
	if !p.Exit().Success() {
		fmt.Println(transport.NewExitError(p))
	}
}
