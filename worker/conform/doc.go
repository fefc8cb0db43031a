// Package conform is the conformance kit of the tproxy wire protocol
// (docs/protocol.md §13): it checks that a worker, written in any
// language, speaks the protocol as the document says.
//
// A worker under test registers the conformance drivers (Go:
// RegisterDrivers; other languages implement the table of §13). The kit
// then starts the worker through any transport.Transport, once per check,
// and speaks the wire to it itself, as a strict black-box client: it writes
// raw frames, reads the worker's stdout line by line, and judges exact
// frames, ids, ordering and timing. It does not use package host, whose
// leniency (§12) would hide what the kit is there to find.
//
// From a worker's own Go tests:
//
//	func TestConformance(t *testing.T) {
//		w := worker.New("my-worker", "1.0.0")
//		conform.RegisterDrivers(w)
//		conform.Test(t, &transport.InMemory{Serve: w.Serve})
//	}
//
// From any program, or for a worker in another language, use Run, or the
// command github.com/tproxy/tproxy/cmd/tproxy ("tproxy conform"):
//
//	go run github.com/tproxy/tproxy/cmd/tproxy conform -- python3 my_worker.py
//
// Besides its own assertions, every check validates every line the worker
// writes while it runs: each must be a JSON-RPC 2.0 message of §3, each
// notification must have the shape of §6, and each response must answer a
// request the kit sent and is still waiting for. A bad line fails the check
// in which it arrived.
package conform
