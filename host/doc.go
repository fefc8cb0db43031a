// Package host is the side of tproxy that keeps the session: it starts a
// worker through a transport, drives it over JSON-RPC 2.0 on the worker's
// stdin and stdout, and persists what the worker reports into a session
// directory (events.jsonl, metrics.jsonl, manifest.json, artifacts/ and
// status.json).
//
// # Entry points
//
// [RunManifest] is what most orchestrators call: it validates a manifest,
// starts the worker, runs the steps in dependency order, fetches each
// step's artifacts, stops the worker and writes status.json, whatever
// happened:
//
//	tr := &transport.Subprocess{Path: "./bin/my-worker"}
//	st, err := host.RunManifest(ctx, tr, host.RunSpec{Manifest: m, Dir: "/runs/run_42"})
//	// st is also in /runs/run_42/status.json; err keeps its type.
//
// [NewRun] returns a [Run] with the three phases separately ([Run.Prepare],
// [Run.Execute], [Run.Collect]) for orchestrators that have phases of
// their own; Collect must follow every Prepare, since it is what writes
// the final status.json. [Many] and [RunMany] run many sessions at once,
// each with its own worker and session directory. [RunSpec] holds the
// knobs of a run: session directory, secrets, artifact policy, caps,
// timeouts, an extra [logsink.Sink] for a live view.
//
// [Start] returns the typed [Client] under all of this, for hosts that
// drive a worker call by call: [Client.Ping], [Client.Prepare],
// [Client.ExecStep], [Client.FetchArtifact], [Client.Cleanup], and
// [Client.Call] for a method the worker registered itself. It is
// configured with [Option] values ([WithSink], [WithLogger],
// [WithHeartbeatTimeout], [WithCallTimeout], [WithMaxFrameSize],
// [WithTrace], ...). Start performs the ping handshake and refuses a
// worker of another protocol version.
//
// The RPC engine is sourcegraph/jsonrpc2's Conn. The streaming
// notifications (event, metric, log, heartbeat) take a fast lane in the
// framing layer under it: they are recognised there and handed to the
// sink without going through Conn, in the same read loop.
//
// # Ordering and concurrency
//
// Messages from the worker are handled one at a time, in the order they
// arrive, on the connection's read loop. The worker writes a call's
// notifications before its response, so when a call returns every event
// and metric the worker sent before the response has been written to the
// sink; after Prepare, ExecStep and Cleanup the sink has also been flushed.
// events.jsonl is therefore in emission order, and a step's records are
// complete when ExecStep returns.
//
// A Client's methods are safe for concurrent use. The worker runs calls
// one at a time in arrival order, except ping, which it answers at once.
// A call whose context ends returns at once; the worker is sent
// $/cancelRequest, which cancels the step's context there, and the
// connection stays usable. A Run's methods may be called from any
// goroutine, but its phases run once each and in order: a call out of
// order or while another phase runs fails with [ErrRunState]. A Many runs
// one fan-out at a time; its OnProgress calls never overlap.
//
// Sinks passed in ([RunSpec.Sink], [WithSink]) must be safe for concurrent
// use, as [logsink.Sink] requires: the worker's records reach them from
// the read loop, the host's own events from the goroutine running the
// phase. Functions passed to [WithHeartbeat] run on the read loop and must
// not block; functions passed to [WithTrace] must not call the Client.
//
// # Errors
//
// Errors keep their type through wrapping; use [errors.Is] and
// [errors.As]. The errors a Run returns have the session's secrets masked,
// in their text and in every field errors.As reaches.
//
//   - [*StepError]: a step failed in the worker (its driver returned an
//     error or panicked); it carries the step id, the error type and the
//     message, and wraps the [*RemoteError] it arrived as. The worker
//     stays usable.
//   - [*RemoteError]: any other error the worker answered a call with,
//     with its JSON-RPC code (the tproxy.Code* constants) and data.
//   - [ErrClosed]: the connection is gone. When the worker died the error
//     also holds a [*transport.ExitError] (exit code or signal, stderr
//     tail); when the worker broke the protocol, a [*ProtocolError].
//   - [*ProtocolError]: bytes that break the framing (the connection is
//     closed), or a result without the method's shape (Method and Field
//     say where; the connection stays usable).
//   - [*SilenceError]: a pending call heard nothing from the worker for
//     the heartbeat timeout; the worker was killed.
//   - [*VersionError]: the handshake found another protocol version.
//   - [*ArtifactError], [*SinkError], [*LimitError]: an artifact refused or
//     not written, a sink that could not persist (errors.Is sees the cause,
//     such as syscall.ENOSPC), a cap the worker made the host reach.
//   - [*SessionTimeoutError]: RunSpec.Timeout passed; it matches
//     context.DeadlineExceeded.
//   - [*tproxy.ManifestError]: the manifest is invalid; nothing ran.
//   - [ErrSessionDirUsed], [ErrRunState], [ErrManyRunning],
//     [ErrSessionFailed] (the cause of the sessions StopOnFailure cancels)
//     and [*ManyError], whose Unwrap returns every session's error.
//
// status.json records the same classification as [Failure.Kind] (the
// Failure* constants).
//
// # The protocol
//
// The wire contract is docs/protocol.md in the repository, which is
// normative: a worker written from it alone, in any language, works
// behind this host. Section 8 states the ordering, cancellation and
// heartbeat rules above; section 12 what the host does with each kind of
// bad input from a worker.
package host
