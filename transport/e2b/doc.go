// Package e2b is a tproxy transport that runs the worker in an E2B
// sandbox (https://e2b.dev), speaking E2B's public wire protocol itself:
// there is no official Go SDK.
//
// # The flow
//
//	E2B.Start
//	  POST {api}/sandboxes                      control plane (X-API-Key): create, tagged tproxy=worker
//	  process.Process/Start  sha256sum           envd: is the same worker already there?
//	  POST /files  (multipart)                  envd: if not, upload it ...
//	  process.Process/Start  chmod 0755         ... and make it executable
//	  process.Process/Start  worker (stdin on)  envd: the output stream, read for the session's life
//	  process.Process/StreamInput               envd: one request body carrying all of the host's writes
//	Process.Close
//	  StreamInput EOF, CloseStdin → wait → SendSignal SIGTERM → wait → SIGKILL → wait
//	  DELETE {api}/sandboxes/{id}
//
// While the worker runs, POST {api}/sandboxes/{id}/timeout sets the
// sandbox's expiry to Timeout from now every RefreshInterval, so a session
// may outlive the sandbox's initial timeout. Stdout data events become the
// bytes Process.Read returns, in order and regardless of line boundaries
// (the host reassembles lines and enforces the frame cap);
// stderr data events go to the stderr tail, Stderr and Logger, as with
// transport.Subprocess. The end event becomes the Process's ExitStatus
// with the same meaning as for a subprocess ("exit status 3" → Code 3,
// "signal: killed" → Signal SIGKILL), so hosts report a worker's death as
// the same *transport.ExitError. A stream that breaks without an end
// event (a cut connection, a deleted or expired sandbox) ends the Process
// with Code -1 and a Reason saying which.
//
// # Deadlines
//
// The Start call carries Keepalive-Ping-Interval and deliberately no
// Connect-Timeout-Ms: envd makes that header the process's deadline and
// kills the process when it expires (the Python SDK's 60 s default). The
// default HTTP client has no Timeout for the same reason; every call is
// bounded by a context instead. Output is not buffered by envd for late
// readers, so a lost stream is a failed session, not something to
// reconnect to.
//
// A Start that fails, or whose context ends, once it has a sandbox kills
// that sandbox but waits for the kill at most E2B.CleanupGrace (2 s)
// past the end of its context, so an unresponsive control plane cannot
// hold the caller (a Pool's Start leaves the kill running in the
// background and Pool.Close waits for it). Process.Close after
// Process.Kill, which a host calls when it cannot wait, is bounded the
// same way. A sandbox whose kill did not finish expires by its timeout,
// which nothing refreshes any more, and Sweep finds it by its tag.
//
// # Why a hand-written Connect codec
//
// The process service is Connect RPC. connectrpc.com/connect with
// generated code is the ordinary client, but it would add two
// dependencies (connect and protobuf) and generated code for a handful of
// messages, and it asks for gzip by default (the largest single cost on a
// fast link). The protocol subset used
// here is small: unary JSON posts and 5-byte-framed envelopes with an
// end-of-stream flag, about a hundred lines (connect.go) that the fuzz
// target covers. The JSON codec is used, as by the official SDKs; it
// costs some tens of µs per round trip against proto, which is small next
// to a network round trip. Compression is off unless E2B.Gzip is set.
//
// # Retries and errors
//
// Idempotent calls (kill, timeout refresh, list, info, upload, CloseStdin,
// SendSignal) are retried on 429, 5xx and network errors with exponential
// backoff; creating a sandbox and starting a process are not, since a
// retry after a lost answer could duplicate them. HTTP failures are
// *APIError values (errors.As); a 401 names the credential to check. The
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
// in the background. A sandbox serves one session, never two. See
// BenchmarkSessionOverhead for the saving.
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
