// Package worker is the runtime of a tproxy worker: the program a host
// starts (as a child process, in a sandbox, behind ssh or docker exec) to
// run a pipeline's steps. You register drivers, one per kind of step, and
// the runtime speaks the protocol: it answers the host's ping, prepare,
// exec_step, fetch_artifact and cleanup requests, keeps the session's
// state and step outputs between calls, and streams events, metrics, log
// records and heartbeats back while a step runs.
//
// # Entry points
//
// A worker binary's main is a few lines:
//
//	func main() {
//		w := worker.New("my-worker", "1.0.0")
//		w.RegisterFunc("extract", func(ctx context.Context, s *worker.Step) error {
//			var cfg struct{ Path string }
//			if err := s.DecodeConfig(&cfg); err != nil {
//				return err
//			}
//			s.Event("progress", map[string]any{"path": cfg.Path})
//			s.SetRows(42)
//			s.SetOutput("table", readTable(cfg.Path)) // stays here, for later steps
//			return nil
//		})
//		worker.Main(w)
//	}
//
// [New] creates a [Worker]; [Worker.Register] and [Worker.RegisterFunc] add
// drivers ([Driver], [DriverFunc]); [Worker.Handle] adds a method of one's
// own, which the host reaches with host.Client.Call. [Main] serves the
// process's stdin and stdout and exits; [Worker.ServeStdio] does the same
// and returns. On Unix it first moves the protocol to private copies of
// fds 0 and 1 and points fd 1 at stderr, so nothing a driver prints can
// corrupt the protocol. [Worker.Serve] serves any io.ReadWriteCloser; with
// transport.InMemory it lets tests drive a worker through the real host
// with no process at all.
//
// A driver works through its [Step]: [Step.Config], [Step.DecodeConfig],
// [Step.Input] and [Step.Inputs] to read, [Step.Event], [Step.Metric] and
// [Step.Logger] to report, [Step.SetRows] and [Step.SetOutput] for the
// result, and
// [Step.ArtifactDir] for files the host fetches into its session directory
// once the step ends. Outputs stay in the worker: only a summary crosses
// the wire ([Summarizer]). The runtime adds the step lifecycle itself:
// step_start, step_complete or step_failed, the rows_processed and
// step_duration_ms metrics, and cleaned_config.json (the step's config,
// secrets masked) among the artifacts. Secrets are masked in everything
// the worker sends; a driver sees the real values.
//
// The RPC engine is sourcegraph/jsonrpc2's Conn. The notifications a step
// emits take a fast lane in the framing layer under it, written there
// without going through Conn, in order with Conn's responses.
//
// # Ordering and concurrency
//
// A Worker may serve many connections at once; each connection is one
// session, with state of its own. Within a session, requests run one at a
// time in arrival order, except ping, which is answered at once, and
// $/cancelRequest, which cancels its request at once. The reader keeps
// reading while a step runs, so the host's cancellation arrives.
//
// A Step's methods are safe for concurrent use by the driver's goroutines.
// Its notifications go out in the order they were emitted, and all of them
// before the step's response. By default each emitting call returns once
// its line has been written to the host, so what a driver emitted survives
// the worker crashing on the next line; [Worker.AsyncNotify] trades that
// for throughput. Once the step has returned, its emitting methods fail
// with [ErrStepDone]. While a request runs the worker sends a heartbeat
// every [Worker.HeartbeatInterval] (2 s by default).
//
// A step's ctx is cancelled when the host cancels the call; the step then
// fails with error type "cancelled" and the session goes on. It is also
// cancelled when the session stops: the host closes the worker's input, a
// write to the host fails, Serve's ctx ends, or (for ServeStdio) the
// process gets SIGTERM. A stopping session answers the step and the
// queued requests as cancelled, removes its session directory and returns
// within [Worker.StopGrace], abandoning a driver that ignores its context.
//
// # Errors
//
// An error returned by a driver, or a panic in it, fails the step, not the
// worker. The host receives a step failure with the step id, the message
// (secrets masked) and an error type, a stable category a host can branch
// on (docs/protocol.md section 7): "cancelled", "panic", "config" (a
// [*ConfigError], from [Step.DecodeConfig] or [Typed]), "timeout" (a
// deadline that passed inside the driver), else "driver"; or a name the
// driver chose with [Fail] or an ErrorType() string method. On the host it
// is a *host.StepError.
//
// # Config
//
// [Step.DecodeConfig] is strict: a config key the target does not take is
// an error naming the key and the nearest known one. A driver made with
// [Typed] declares its config type, and the worker checks every step's
// config against it when the host prepares the session, before any step
// runs: a mistake in the last step's config fails the session at once,
// as a *tproxy.ManifestError naming the step and the field. The package
// worker/workertest runs one driver, with a config and inputs of your
// choosing, from a test.
//
// [Handler] returns an [*Error] to choose the JSON-RPC code, message and
// data of its response; any other error is sent as an internal error.
// [Worker.Serve] and [Worker.ServeStdio] return nil when the host closed
// the connection or ctx ended, and an error when reading or writing the
// connection failed.
//
// # The protocol
//
// The wire contract is docs/protocol.md in the repository, which is
// normative; this package is its Go implementation. Section 8 states the
// ordering, concurrency, cancellation and heartbeat rules above, section 9
// the step lifecycle, section 12 what a worker answers to bad input. The
// conformance kit (package worker/conform, command "tproxy conform")
// checks a worker against it, in any language.
package worker
