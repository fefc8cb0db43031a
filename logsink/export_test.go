package logsink

import (
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// SetNow replaces the clock Files uses for records with a zero Timestamp.
func SetNow(f *Files, now func() time.Time) { f.now = now }

// Lines returns the lines Files writes for e through Event and for raw
// through eventRaw, with the same ts, seq and session.
func Lines(ts time.Time, e *tproxy.Event, raw *wire.RawEvent) (slow, fast string) {
	var enc lineEncoder
	slow = string(enc.event(ts, 7, "sess", e))
	fast = string(enc.rawEvent(ts, 7, "sess", raw))
	return slow, fast
}

// EncoderBuffers returns the capacity of the buffers f's line encoder
// keeps between lines.
func EncoderBuffers(f *Files) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cap(f.enc.buf) + f.enc.vbuf.Cap()
}
