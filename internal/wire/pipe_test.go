package wire_test

import (
	"io"
)

type pipeEnd struct {
	io.Reader
	io.WriteCloser
}

// pipePair returns two connected in-memory byte streams.
func pipePair() (a, b io.ReadWriteCloser) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	return pipeEnd{ar, aw}, pipeEnd{br, bw}
}
