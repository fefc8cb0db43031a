// Package tproxy is a transparent proxy for running a data pipeline's steps
// somewhere else — a child process, or a process in a remote sandbox —
// while the host keeps the one session.
//
// The host (package host) starts a worker through a transport (package
// transport) and talks JSON-RPC 2.0 to it over the worker's stdin and
// stdout, one JSON message per line (Stream). The worker runtime (package
// worker) answers ping, prepare, exec_step and cleanup, keeps the session's
// state across calls, and streams events, metrics, log records and
// heartbeats back as notifications while a step runs. The host writes what
// it receives, in wire order, through a log sink (package logsink), e.g.
// events.jsonl and metrics.jsonl in the session directory.
//
// This package holds what both sides share: the wire types, method names,
// error codes and protocol version, and the newline-delimited framing.
package tproxy
