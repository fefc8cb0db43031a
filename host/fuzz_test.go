package host_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// FuzzWorkerOutput plays a worker that writes arbitrary bytes: the host
// must never panic or hang; a handshake either succeeds or fails with an
// error, and Close returns.
func FuzzWorkerOutput(f *testing.F) {
	pong := `{"jsonrpc":"2.0","id":1,"result":{"status":"pong","protocol":1,"worker":{"name":"f","version":"1","drivers":["d"]}}}` + "\n"
	for _, s := range []string{
		pong,
		"Welcome to the sandbox!\n" + pong,
		`{"jsonrpc":"2.0","method":"event","params":{"name":"e","timestamp":"2024-01-01T00:00:00Z","step_id":"s","data":{"k":"\u00e9\ud800"}}}` + "\n" + pong,
		`{"jsonrpc":"2.0","method":"metric","params":{"name":"m","value":1e400}}` + "\n" + pong,
		`{"jsonrpc":"2.0","id":99,"result":{}}` + "\n" + pong,
		`{"jsonrpc":"2.0","method":"event","params":{"name":"\xff\xfe","data":{"\xff":"\xfe"}}}` + "\n" + pong,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32004,"message":"m","data":{"step_id":"s"}}}` + "\n",
		"{\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		// The fuzzed worker's frames are anything; the host's are validated.
		tr := &transport.InMemory{Serve: wiretest.Serve(t, func(ctx context.Context, rw io.ReadWriteCloser) error {
			go func() {
				rw.Write(out)
				rw.Close() // the host reads EOF after out
			}()
			io.Copy(io.Discard, rw) // until the host closes the worker's stdin
			return nil
		}, wiretest.HostFrames)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := host.Start(ctx, tr, host.WithSink(&logsink.Memory{}), host.WithLogger(slog.New(slog.DiscardHandler)),
			host.WithStartTimeout(time.Second))
		if err != nil {
			return
		}
		stepCtx, stepCancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer stepCancel()
		c.ExecStep(stepCtx, tproxy.ExecStepParams{StepID: "s", Driver: "d"})
		c.Close()
	})
}
