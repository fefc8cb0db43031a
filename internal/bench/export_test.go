package bench

import (
	"testing"

	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// TapHosts validates, until tb ends, every frame of the hosts that
// StartHost and its variants start, both ways, against docs/schema. It is
// for the tests that check behaviour; the benchmarks measure untapped.
func TapHosts(tb testing.TB) {
	wrapTransport = func(tr transport.Transport) transport.Transport { return wiretest.Transport(tb, tr, wiretest.Both) }
	tb.Cleanup(func() { wrapTransport = nil })
}
