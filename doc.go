// Package tproxy is a transparent proxy for running a data pipeline's steps
// somewhere else — a child process, a process in an E2B sandbox, any
// command whose stdio reaches a worker — while the host keeps the one
// session.
//
// The host (package host) starts a worker through a transport (package
// transport: Subprocess, InMemory; package transport/e2b: E2B) and talks
// JSON-RPC 2.0 to it over the worker's stdin and stdout, one JSON message
// per line; sourcegraph/jsonrpc2's Conn is the engine on both sides. The worker runtime (package worker) answers ping,
// prepare, exec_step, fetch_artifact and cleanup, keeps the session's
// state across calls, and streams events, metrics, log records and
// heartbeats back as notifications while a step runs. The host writes what
// it receives, in wire order, through a log sink (package logsink).
//
// host.RunManifest runs a whole Manifest that way — validated, in
// dependency order, with each step's artifacts fetched over the same
// connection and secrets masked — and leaves a session directory
// with events.jsonl, metrics.jsonl, manifest.json, artifacts/ and a
// status.json written after every run, failed ones too. The same run
// gives the same logs whichever transport carried it.
//
// This package is the protocol's vocabulary, the Go mirror of
// docs/protocol.md: the wire types, method names, error codes and
// protocol version, the frame cap and FrameError, the manifest with its
// validation and ordering, and which config values are secret.
package tproxy
