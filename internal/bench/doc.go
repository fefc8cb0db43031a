// Package bench measures tproxy against the raw pipes it runs over, in the
// same process and the same run, so that the ratios mean something on a
// shared, noisy machine.
//
// Every measurement pairs a baseline with the tproxy path it bounds:
//
//   - RawEcho, one line to a child process and back, and RPCPing, plain
//     sourcegraph/jsonrpc2 Conn.Call to a child whose Conn answers with a
//     synchronous handler, bound Host.Ping; a ping in turn bounds
//     Host.EmptyStep (a step whose driver does nothing) and
//     Host.IdleEventLatency (one event from an idle worker).
//   - RawStream, a child writing one line per write into a buffered file,
//     and RPCStream, a child's jsonrpc2 Conn.Notify of events whose
//     params the receiving Conn's handler writes to a buffered file,
//     bound Host.Stream, a worker's events persisted to events.jsonl:
//     as users run it (StartUserHost: a secret in the session, so the
//     host masks, and a user sink beside the files through
//     logsink.Multi), and with the fast path all the way (StartHost: no
//     secret, the files the only sink); each durable, and with the
//     worker's AsyncNotify.
//   - HostRSS runs a host in a child process, streams events through it and
//     reports the child's peak resident set; RawRSS does the same for the
//     raw stream.
//   - IdleSessions opens in-memory sessions in a child process and reports
//     what each costs in memory and goroutines.
//
// The child processes are the benchmark's own executable started again
// with an environment variable naming their role: a program (or TestMain)
// that uses this package calls RunRole first thing. The test binary's
// benchmarks (go test -bench . ./internal/bench) and the command
// cmd/tproxybench run the same code. The package is internal: the harness
// is not part of the SDK's API.
package bench
