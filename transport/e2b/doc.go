// Package e2b is a tproxy transport that runs the worker in an E2B
// sandbox (https://e2b.dev), speaking E2B's public wire protocol itself:
// there is no official Go SDK.
//
// # The flow
//
//	E2B.Start
//	  POST {api}/sandboxes                      control plane (X-API-Key): create, tagged tproxy=worker
//	  (envdVersion checked: 0.5.2 or later, else ErrEnvdTooOld)
//	  process.Process/Start  sha256sum           envd: is the same worker already there?
//	  POST /files  (multipart)                  envd: if not, upload it ...
//	  process.Process/Start  chmod 0755         ... and make it executable
//	    (or, with E2B.WorkerPath, one filesystem.Filesystem/Stat of the worker baked into the template)
//	  POST /files, Start sha256sum              envd: E2B.Files, then their sizes and sha256 checked
//	  process.Process/Start  worker (stdin on)  envd: the output stream, read for the session's life
//	  process.Process/StreamInput               envd: a probe, then one request body carrying all of the host's writes
//	Close
//	  StreamInput end, CloseStdin → wait → SendSignal SIGTERM → wait → SIGKILL → wait
//	  DELETE {api}/sandboxes/{id}
//
// While the worker runs, POST {api}/sandboxes/{id}/timeout sets the
// sandbox's expiry to Timeout from now every RefreshInterval, so a session
// may outlive the sandbox's initial timeout. Stdout data events become the
// bytes the Process's Read returns, in order and regardless of line
// boundaries (the host reassembles lines and enforces the frame cap);
// stderr data events go to the stderr tail, Stderr and Logger, as with
// transport.Subprocess. The end event becomes the Process's ExitStatus
// with the same meaning as for a subprocess ("exit status 3" → Code 3,
// "signal: killed" → Signal SIGKILL), so hosts report a worker's death as
// the same *transport.ExitError. A stream that breaks without an end
// event (a cut connection, a deleted or expired sandbox) ends the Process
// with Code -1 and a Reason saying which. [InfoOf] tells which sandbox a
// Process runs in and what it cost.
//
// # Stdin
//
// Stdin is one client-streaming StreamInput call for the session, once a
// probe (a StreamInput call that ends at once) has shown that client
// streams get through; E2B's own SDKs send stdin with unary SendInput,
// and whether every proxy in front of a sandbox passes a long client
// stream is not known. If the probe is refused, or the stream is cut
// later, every write goes as a SendInput call instead, in order; see the
// input type for what a cut can and cannot lose.
//
// # Deadlines
//
// The Start call carries Keepalive-Ping-Interval and deliberately no
// Connect-Timeout-Ms: envd makes that header the process's deadline and
// kills the process when it expires (the Python SDK's 60 s default), and
// connect-go sends it for any context with a deadline, so every Start
// runs under a context without one, cancelled instead. The default HTTP
// client has no Timeout for the same reason. Output is not buffered by
// envd for late readers, so a lost stream is a failed session, not
// something to reconnect to.
//
// A Start that fails, or whose context ends, once it has a sandbox kills
// that sandbox but waits for the kill at most E2B.CleanupGrace (2 s)
// past the end of its context, so an unresponsive control plane cannot
// hold the caller (a Pool's Start leaves the kill running in the
// background and Pool.Close waits for it). Close after Kill, which a host
// calls when it cannot wait, is bounded the same way; Close of a worker
// whose sandbox is gone (E2B's edge answers 502 "not found") stops at the
// first such answer. A sandbox whose kill did not finish expires by its
// timeout, which nothing refreshes any more, and Sweep finds it by its
// tag.
//
// # The wire: connect-go and envd's schema
//
// envd's process and filesystem services are Connect RPC. The calls go
// through connectrpc.com/connect with code generated (protoc-gen-go,
// protoc-gen-connect-go) from .proto definitions of those services kept
// in internal/e2benvd, written from the wire facts envd publishes and
// checked field by field against them (TestContractSchema); the local
// fake in internal/e2bfake serves handlers generated from the same
// definitions. The proto codec is the default (E2B.JSON selects the JSON
// codec the official SDKs use: it costs more per message, and base64 on
// every stdout byte); gzip is off unless E2B.Gzip is set, since
// connect-go would otherwise ask for it on every call and compression is
// the largest single cost on a fast link; HTTP/1.1 only, as envd serves
// no h2c. Helper streams are read to their end-of-stream message, so
// their connections are reused.
//
// # Retries and errors
//
// Idempotent calls (kill, timeout refresh, list, info, upload, Stat,
// CloseStdin, SendSignal) are retried, with exponential backoff, on 429,
// on 502, 503 or 504 unless the edge says the sandbox is gone, and on a
// reset connection; a 500 (envd's "error ensuring directories", "text
// file busy") and other statuses are permanent. Creating a sandbox,
// starting a process and sending input are never retried, since a retry
// after a lost answer could duplicate them. A helper command that cannot
// run (an end-of-stream error, a 401) fails the start before any upload.
// HTTP failures are *APIError values (errors.As); a 401 names the
// credential, or the user, to check. The
// API key goes only to the control plane in X-API-Key: never into the
// sandbox, its environment, an error or a log (ForwardEnv and Env refuse
// it). No redirect is followed, whatever E2B.HTTPClient says: Go's
// client would copy X-API-Key (and envd's X-Access-Token) to the
// redirect's target, so a 3xx answer is an *APIError naming the Location.
// Every field of an *APIError, and every error the package returns, is
// masked for the whole key and for every piece of it longer than 4
// characters, and an error body is masked before it is cut, so no error
// holds more than 4 characters of the key in a row
// (FuzzAPIErrorNeverLeaksKey).
//
// # Warm pool
//
// [Pool] keeps K sandboxes created with the worker uploaded and hands one
// to each Start, so a session pays only for starting the worker process;
// the session's Close kills its sandbox and the pool warms a replacement
// in the background. A sandbox serves one session, never two; what the
// waiting costs is Pool.IdleSeconds. A template with the worker baked in
// (E2B.WorkerPath, docs/e2b.md) saves the upload without a pool. See
// BenchmarkSessionOverhead for both savings.
//
// # Orphans
//
// Every sandbox carries the metadata tag TagKey=TagValue plus
// E2B.Metadata. E2B.List and E2B.Sweep find and kill the ones a crashed
// host left behind, by tag and age.
//
// The local, wire-faithful E2B in package e2bfake runs all of this
// against real local processes, with fault injection, for tests and for
// the example's -fake flag.
package e2b
