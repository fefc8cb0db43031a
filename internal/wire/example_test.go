package wire_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// A Stream reads and writes one JSON message per line, whatever chunks the
// bytes arrive in, and refuses a frame over its cap with an error that
// quotes the frame's start.
func ExampleStream() {
	var buf strings.Builder
	out := wire.NewStream(nopCloser{&buf}, 0)
	out.WriteObject(map[string]any{"jsonrpc": "2.0", "method": "ping", "id": 1})
	fmt.Print(buf.String())

	in := wire.NewStream(nopCloser{strings.NewReader(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n" +
		`{"jsonrpc":"2.0","method":"event","params":{"name":"` + strings.Repeat("x", 100) + `"}}` + "\n")}, 64)
	frame, err := in.ReadFrame()
	fmt.Printf("%s %v\n", frame, err)
	_, err = in.ReadFrame()
	fmt.Println(errors.Is(err, tproxy.ErrFrameTooLarge))
	fmt.Println(err)
	// Output:
	// {"id":1,"jsonrpc":"2.0","method":"ping"}
	// {"jsonrpc":"2.0","id":1,"result":{}} <nil>
	// true
	// tproxy: read frame: frame too large (155 bytes, cap 64); starts "{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"name\":\"xxxxxxxxxxxx"...
}

type nopCloser struct{ any }

func (n nopCloser) Read(p []byte) (int, error) {
	if r, ok := n.any.(io.Reader); ok {
		return r.Read(p)
	}
	return 0, io.EOF
}

func (n nopCloser) Write(p []byte) (int, error) {
	if w, ok := n.any.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, io.ErrClosedPipe
}

func (nopCloser) Close() error { return nil }
