// Command conformworker is a Go worker with the conformance drivers of
// docs/protocol.md §13 and nothing else: the Go runtime as the
// conformance kit sees it. CI checks it with:
//
//	go build -o /tmp/conformworker ./worker/conform/conformworker
//	go run ./cmd/tproxy conform -- /tmp/conformworker
package main

import (
	"github.com/tproxy/tproxy/worker"
	"github.com/tproxy/tproxy/worker/conform"
)

func main() {
	w := worker.New("tproxy-conformworker", "1.0.0")
	conform.RegisterDrivers(w)
	worker.Main(w)
}
