// Package bench measures tproxy against the raw pipes it runs over, in the
// same process and the same run, so that the ratios mean something on a
// shared, noisy machine.
//
// Every measurement pairs a baseline with the tproxy path it bounds:
//
//   - RawEcho, one line to a child process and back, bounds Host.Ping;
//     a ping in turn bounds Host.EmptyStep (a step whose driver does
//     nothing) and Host.IdleEventLatency (one event from an idle worker).
//   - RawStream, a child writing one line per write into a buffered file,
//     bounds Host.Stream, a worker's events persisted to events.jsonl.
//   - HostRSS runs a host in a child process, streams events through it and
//     reports the child's peak resident set; RawRSS does the same for the
//     raw stream.
//   - IdleSessions opens in-memory sessions in a child process and reports
//     what each costs in memory and goroutines.
//
// The child processes are the benchmark's own executable started again
// with an environment variable naming their role: a program (or TestMain)
// that uses this package calls RunRole first thing. The test binary's
// benchmarks (go test -bench . ./bench) and the command
// bench/cmd/tproxybench run the same code.
package bench
