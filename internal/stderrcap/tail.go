package stderrcap

import (
	"bytes"
	"sync"
	"unicode/utf8"
)

// defaultTailSize is how much of a worker's stderr is kept for error
// messages when the transport does not say otherwise.
const defaultTailSize = 16 << 10

// tailBuffer keeps the last size bytes written to it. It is safe for
// concurrent use.
type tailBuffer struct {
	mu        sync.Mutex
	size      int
	buf       []byte
	truncated bool // bytes were dropped from the front
}

func newTailBuffer(size int) *tailBuffer {
	if size <= 0 {
		size = defaultTailSize
	}
	return &tailBuffer{size: size}
}

// Write never fails.
func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) > t.size {
		p = p[len(p)-t.size:]
		t.truncated = true
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.size; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return trimTail(t.buf, t.truncated)
}

// trimTail makes a readable string of the last bytes of a stream. When the
// front was cut off (truncated), the partial first line is dropped if a
// line boundary lies in the first half of b, so a long last line is not
// sacrificed for a tidy start; otherwise the cut is moved forward to the
// next UTF-8 rune start.
func trimTail(b []byte, truncated bool) string {
	if !truncated {
		return string(b)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)/2 {
		return string(b[i+1:])
	}
	for k := 0; k < utf8.UTFMax-1 && len(b) > 0 && !utf8.RuneStart(b[0]); k++ {
		b = b[1:]
	}
	return string(b)
}
