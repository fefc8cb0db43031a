// Package transport carries bytes between a tproxy host and one worker and
// owns the worker's lifecycle.
//
// A [Transport] starts a worker and returns a [Process]: the host writes
// JSON-RPC frames to the worker's stdin with Write and reads the worker's
// replies from its stdout with Read. The Process also reports, through
// Done, Exit and StderrTail, when and how the worker ended, so a host can
// fail the calls in flight at once with an [ExitError] instead of waiting
// for a timeout. Close shuts the worker down with a ladder: stop reading
// its stdout and close its stdin, wait, ask it to terminate, wait, kill
// it.
//
// The package frames nothing; message boundaries are the host's and the
// worker's business.
//
// Implementations:
//
//   - [Subprocess] runs the worker as a local child process in its own
//     process group, captures its stderr, and kills the whole group when
//     the worker ends, so nothing it spawned outlives it.
//   - [Command] is a Subprocess whose program is an intermediary that
//     reaches the worker: ssh, kubectl exec -i, docker exec -i, a shell.
//     It says which signals and statuses travel through such a layer.
//   - [InMemory] runs a Go function in a goroutine over in-memory pipes.
//     It needs no binary and no subprocess, which makes it the transport
//     for unit tests of drivers and hosts.
//
// A transport for E2B sandboxes lives in transport/e2b.
package transport
