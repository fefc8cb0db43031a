package workertest

import (
	"context"
	"io"

	"github.com/tproxy/tproxy/internal/wiretest"
)

// Every worker Run serves in these tests and examples has its frames, and
// the host's, validated against docs/schema; wiretest.Main in TestMain
// turns a frame that does not validate into a failed run.
func init() {
	wrapServe = func(serve func(context.Context, io.ReadWriteCloser) error) func(context.Context, io.ReadWriteCloser) error {
		return wiretest.Serve(nil, serve, wiretest.Both)
	}
}
