package logsink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
)

// DefaultConsolePrefix starts every Console line, indenting records under
// the host's own progress lines.
const DefaultConsolePrefix = "   "

// Console is a Sink that prints one human-readable line per record, for
// watching a run live:
//
//	📊 Event: step_complete step=extract duration_ms=12 rows=42
//	📈 Metric: rows_processed = 42 rows step=extract table=users
//
// An event line is the name, then step=<StepID> if set, then the data
// fields sorted by key; a metric line is name = value, then the unit, then
// step=<StepID>, then the tags sorted by key. A data field or tag named
// "step" is shown as "data.step". Strings are shown bare when they are one
// plain word and Go-quoted otherwise; other values as compact JSON, or %v
// when JSON cannot encode them. Timestamps are not shown.
//
// Console is safe for concurrent use; each record is one Write to the
// writer. Its methods ignore ctx.
type Console struct {
	// Prefix starts every line; NewConsole sets DefaultConsolePrefix. Set
	// it before first use.
	Prefix string

	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

var _ Sink = (*Console)(nil)

// NewConsole returns a Console writing to w.
func NewConsole(w io.Writer) *Console {
	return &Console{Prefix: DefaultConsolePrefix, w: w}
}

// Event prints e.
func (c *Console) Event(_ context.Context, e tproxy.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(append(c.buf[:0], c.Prefix...), "📊 Event: "...)
	c.buf = append(c.buf, e.Name...)
	if e.StepID != "" {
		c.buf = appendPair(c.buf, "step", e.StepID)
	}
	for _, k := range consoleKeys(e.Data) {
		c.buf = appendPair(c.buf, consoleName(k), e.Data[k])
	}
	return c.write()
}

// Metric prints m.
func (c *Console) Metric(_ context.Context, m tproxy.Metric) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(append(c.buf[:0], c.Prefix...), "📈 Metric: "...)
	c.buf = append(c.buf, m.Name...)
	c.buf = append(c.buf, " = "...)
	c.buf = strconv.AppendFloat(c.buf, m.Value, 'g', -1, 64)
	if m.Unit != "" {
		c.buf = append(append(c.buf, ' '), m.Unit...)
	}
	if m.StepID != "" {
		c.buf = appendPair(c.buf, "step", m.StepID)
	}
	for _, k := range consoleKeys(m.Tags) {
		c.buf = appendPair(c.buf, consoleName(k), m.Tags[k])
	}
	return c.write()
}

// Flush flushes the writer if it has a Flush() error method (as
// *bufio.Writer has), and otherwise does nothing.
func (c *Console) Flush() error {
	f, ok := c.w.(interface{ Flush() error })
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := f.Flush(); err != nil {
		return fmt.Errorf("logsink: console: %w", err)
	}
	return nil
}

func (c *Console) write() error {
	c.buf = append(c.buf, '\n')
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("logsink: console: %w", err)
	}
	return nil
}

func consoleKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(consoleName(a), consoleName(b)) })
	return keys
}

func consoleName(k string) string {
	if k == "step" {
		return "data.step"
	}
	return k
}

func appendPair(b []byte, k string, v any) []byte {
	b = append(b, ' ')
	b = appendWord(b, k)
	b = append(b, '=')
	switch v := v.(type) {
	case string:
		return appendWord(b, v)
	case nil:
		return append(b, "null"...)
	}
	if j, err := json.Marshal(v); err == nil {
		return append(b, j...)
	}
	return appendWord(b, fmt.Sprint(v))
}

// appendWord appends s bare if it reads as one word, quoted otherwise.
func appendWord(b []byte, s string) []byte {
	if plainWord(s) {
		return append(b, s...)
	}
	return strconv.AppendQuote(b, s)
}

func plainWord(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '"' || r == '=' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
