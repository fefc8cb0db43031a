package worker_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

// FuzzServe feeds arbitrary bytes to the worker as if from a host: the
// worker must never panic or hang, and must return once its input ends.
func FuzzServe(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"x"}}` + "\n",
		`{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"echo"}]},"secrets":{"pointers":["/k"]}}}` + "\n" +
			`{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"echo","config":{"k":"secret-value","n":3}}}` + "\n" +
			`{"jsonrpc":"2.0","id":3,"method":"fetch_artifact","params":{"step_id":"a","path":"cleaned_config.json","length":7}}` + "\n" +
			`{"jsonrpc":"2.0","id":4,"method":"cleanup"}` + "\n",
		`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":2}}` + "\n",
		`{"jsonrpc":"2.0","id":"x","method":"exec_step","params":{"step_id":"../a","driver":"echo","inputs":{"i":{"from_step":"q","key":"k"}}}}` + "\n",
		"not json\n",
		`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n",
		"\xff\xfe\n",
	} {
		f.Add([]byte(s))
	}
	w := worker.New("fuzz", "1")
	w.HeartbeatInterval = time.Millisecond
	w.WorkDir = f.TempDir()
	w.RegisterFunc("echo", func(ctx context.Context, s *worker.Step) error {
		s.Event("config", s.Config())
		s.Metric("n", 1, worker.Tag("k", "v"))
		s.Logger().Info("echo", "config", s.Config())
		s.SetOutput("k", s.Config())
		return nil
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		hostR, workerW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			// Whatever the input, the worker's answers are valid frames.
			done <- w.Serve(context.Background(), wiretest.Conn(t, pipeEnd{strings.NewReader(string(in)), workerW}, wiretest.WorkerFrames))
		}()
		go io.Copy(io.Discard, hostR)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Serve did not return after its input ended; input %q", in)
		}
		hostR.Close()
	})
}
