package logsink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// The file names of a session directory, as the README's "The session directory"
// fixes them.
const (
	EventsFile  = "events.jsonl"
	MetricsFile = "metrics.jsonl"
	LogsFile    = "logs.jsonl"
)

// DefaultLogCap is the size at which logs.jsonl stops growing unless
// WithLogCap says otherwise.
const DefaultLogCap = 64 << 20

// DefaultBufferSize is the per-file buffer of Files. Lines reach the file
// when the buffer fills, on Flush and on Close.
const DefaultBufferSize = 64 << 10

// ErrClosed is returned by writes and flushes after Close.
var ErrClosed = errors.New("logsink: sink closed")

// ErrMaxBytes is matched by errors.Is for the error Files returns once a
// line would take events.jsonl and metrics.jsonl past the cap set with
// WithMaxBytes.
var ErrMaxBytes = errors.New("logsink: the session's byte cap is reached")

// An Option configures OpenDir.
type Option func(*filesConfig)

type filesConfig struct {
	sync     bool
	bufSize  int
	maxBytes int64
	logCap   int64
}

// WithLogCap caps logs.jsonl at n bytes: a record that would cross the cap
// is dropped and counted (Files.LogsDropped), the run goes on, and one
// last line says the cap was reached. Log records are diagnostics, so,
// unlike events and metrics, losing some is not a failure; they do not
// count against WithMaxBytes. n == 0 means DefaultLogCap; n < 0, no cap.
func WithLogCap(n int64) Option { return func(c *filesConfig) { c.logCap = n } }

// WithSync makes Flush (and Close) also fsync both files, so that a flushed
// line survives a machine crash, not only a host crash. It costs a disk
// round trip per Flush; hosts flush at step boundaries, not per line.
func WithSync() Option { return func(c *filesConfig) { c.sync = true } }

// WithBufferSize sets the per-file buffer size; n <= 0 means
// DefaultBufferSize.
func WithBufferSize(n int) Option { return func(c *filesConfig) { c.bufSize = n } }

// WithMaxBytes caps the bytes events.jsonl and metrics.jsonl hold
// together, what they held when opened included: a peer that streams
// without end fills the cap, not the disk. The line that would cross the
// cap is not written, and, like a write error, the refusal is sticky: that
// call and every later Event, Metric, Flush and Close return an error
// wrapping ErrMaxBytes. What was written before stays, whole lines only.
// n <= 0 means no cap, the default.
func WithMaxBytes(n int64) Option { return func(c *filesConfig) { c.maxBytes = n } }

// Files is the Sink that persists one session to a session directory: events
// to events.jsonl and metrics to metrics.jsonl, one JSON object per line.
//
// An event line is
//
//	{"ts":…,"seq":n,"session":id,"event":name,"step_id":…,<data fields>}
//
// and a metric line is
//
//	{"ts":…,"seq":n,"session":id,"metric":name,"value":v,"step_id":…,"unit":…,<tags>}
//
// with keys in exactly that order, optional keys (step_id, unit) left out
// when empty, and data fields or tags after them sorted by key. "ts" is the
// record's Timestamp in UTC, RFC 3339 with nanoseconds, or the time of
// writing when the Timestamp is zero. "seq" is one counter for both files,
// starting at 1, so that merging the files by seq gives the order in which
// the records were written.
//
// Nothing a caller passes is dropped or overwritten:
//   - A data field or tag whose key is reserved (ts, seq, session, event,
//     metric, value, value_invalid, step_id, unit) is written as
//     "data.<key>" (with more "data." prefixes if that key is taken too).
//   - A metric value that JSON cannot hold (NaN, +Inf, -Inf) is written as
//     "value":null followed by "value_invalid":"NaN" (or "+Inf", "-Inf").
//   - A data value that encoding/json cannot encode (a channel, a func, a
//     NaN inside the data) is written as its fmt %v string.
//
// Writes are buffered. The first error writing, flushing or syncing a file is
// sticky: that call and every later Event, Metric, Flush and Close return
// it. It wraps an *fs.PathError naming the file, so it reads
// "logsink: write /dir/events.jsonl: no space left on device" and errors.Is
// reaches the cause (syscall.ENOSPC). Reaching the cap of WithMaxBytes is
// sticky the same way (ErrMaxBytes).
//
// Files is safe for concurrent use. Its methods ignore ctx: a line is
// written or the sink is broken, and a cancelled run still wants its last
// events recorded.
type Files struct {
	dir      string
	session  string
	sync     bool
	maxBytes int64            // 0: no cap
	logCap   int64            // 0: no cap
	now      func() time.Time // replaced by tests

	mu       sync.Mutex
	seq      uint64
	events   logFile
	metrics  logFile
	logs     logFile
	enc      lineEncoder
	size     int64 // bytes in events.jsonl and metrics.jsonl, buffered ones included
	logSize  int64 // bytes in logs.jsonl
	dropped  int64 // log records over the cap
	err      error // sticky
	closed   bool
	closeErr error
}

type logFile struct {
	path string
	f    *os.File
	w    *bufio.Writer
}

func init() {
	// The host's fast lane reaches Files' raw entry point through
	// wire.RawOf; the method stays unexported.
	wire.SetFilesRaw(func(sink any) (wire.RawFunc, bool) {
		if f, ok := sink.(*Files); ok {
			return f.eventRaw, true
		}
		return nil, false
	})
}

// OpenDir opens the session directory dir for session sessionID, creating
// dir (0o755) and the two files (0o644) as needed. Existing files are
// appended to: seq continues after the highest seq found on the last line
// of either file, and a last line cut short by a crash is ended with a
// newline so that it does not swallow the next one.
func OpenDir(dir, sessionID string, opts ...Option) (*Files, error) {
	if sessionID == "" {
		return nil, errors.New("logsink: open " + dir + ": empty session id")
	}
	var cfg filesConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.bufSize <= 0 {
		cfg.bufSize = DefaultBufferSize
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		// MkdirAll names the component that failed, maybe not dir itself.
		return nil, fmt.Errorf("logsink: session dir %s: %w", dir, err)
	}
	switch {
	case cfg.logCap == 0:
		cfg.logCap = DefaultLogCap
	case cfg.logCap < 0:
		cfg.logCap = 0
	}
	s := &Files{dir: dir, session: sessionID, sync: cfg.sync, maxBytes: max(cfg.maxBytes, 0), logCap: cfg.logCap, now: time.Now}
	var last uint64
	for _, f := range []struct {
		lf   *logFile
		name string
	}{{&s.events, EventsFile}, {&s.metrics, MetricsFile}, {&s.logs, LogsFile}} {
		seq, size, err := f.lf.open(filepath.Join(dir, f.name), cfg.bufSize)
		if err != nil {
			s.events.close()
			s.metrics.close()
			return nil, fmt.Errorf("logsink: %w", err)
		}
		last = max(last, seq)
		if f.lf == &s.logs {
			s.logSize = size
		} else {
			s.size += size
		}
	}
	s.seq = last
	return s, nil
}

// open opens the file for appending and returns the last seq it holds
// and its size.
func (lf *logFile) open(path string, bufSize int) (seq uint64, size int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, 0, err
	}
	seq, cut, err := lastSeq(f)
	if err == nil && cut {
		_, err = f.Write([]byte{'\n'})
	}
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
	}
	if err != nil {
		f.Close()
		return 0, 0, err
	}
	if st.Mode().IsRegular() {
		size = st.Size()
	}
	lf.path, lf.f, lf.w = path, f, bufio.NewWriterSize(f, bufSize)
	return seq, size, nil
}

// lastSeq reads the seq of the last complete line of f (0 when there is
// none or it has no seq) and reports whether f ends in a partial line.
func lastSeq(f *os.File) (seq uint64, cut bool, err error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return 0, false, err
	}
	// Lines are small; a last line longer than this is not worth chasing.
	const window = 1 << 20
	size := st.Size()
	off := max(0, size-window)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return 0, false, err
	}
	cut = buf[len(buf)-1] != '\n'
	if i := lastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i] // drop the partial tail, if any, and the newline
	} else {
		return 0, cut, nil
	}
	if i := lastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	} else if off > 0 {
		return 0, cut, nil
	}
	var line struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(buf, &line) != nil {
		return 0, cut, nil
	}
	return line.Seq, cut, nil
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// Dir returns the session directory.
func (s *Files) Dir() string { return s.dir }

// SessionID returns the session id written on every line.
func (s *Files) SessionID() string { return s.session }

// Event appends e to events.jsonl.
func (s *Files) Event(_ context.Context, e tproxy.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.seq++
	line := s.enc.event(s.stamp(e.Timestamp), s.seq, s.session, &e)
	return s.write(&s.events, line)
}

// eventRaw appends e, an event as wire.ParseEvent decodes it from a
// notification's params, to events.jsonl: the same line, byte for byte, as
// Event writes for the Event that json.Unmarshal decodes from those
// params, without building its Data map.
func (s *Files) eventRaw(_ context.Context, e *wire.RawEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.seq++
	line := s.enc.rawEvent(s.stamp(e.Timestamp), s.seq, s.session, e)
	return s.write(&s.events, line)
}

// Metric appends m to metrics.jsonl.
func (s *Files) Metric(_ context.Context, m tproxy.Metric) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.seq++
	line := s.enc.metric(s.stamp(m.Timestamp), s.seq, s.session, &m)
	return s.write(&s.metrics, line)
}

// Log appends r to logs.jsonl, as
//
//	{"ts":…,"seq":n,"session":id,"level":…,"source":…,"step_id":…,"msg":…,<attrs>}
//
// with source and step_id left out when empty, attrs sorted by key, and an
// attr whose key is one of those written as "attr.<key>". Past the cap of
// WithLogCap the record is dropped and counted, and Log returns nil.
func (s *Files) Log(_ context.Context, r tproxy.LogRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	line := appendLog(nil, s.stamp(r.Timestamp), s.seq+1, s.session, &r)
	if s.logCap > 0 && s.logSize+int64(len(line)) > s.logCap {
		if s.dropped == 0 {
			note := tproxy.LogRecord{Level: "WARN", Source: tproxy.SourceHost, Timestamp: s.now(),
				Message: fmt.Sprintf("%s reached its cap of %d bytes: later records are dropped and counted", LogsFile, s.logCap)}
			s.seq++
			s.writeLog(appendLog(nil, note.Timestamp, s.seq, s.session, &note))
		}
		s.dropped++
		return s.err
	}
	s.seq++
	s.writeLog(line)
	return s.err
}

func (s *Files) writeLog(line []byte) {
	s.logSize += int64(len(line))
	if _, err := s.logs.w.Write(line); err != nil && s.err == nil {
		s.err = wrapFileErr("write", s.logs.path, err)
	}
}

// LogsDropped is the number of log records dropped at the cap of
// WithLogCap.
func (s *Files) LogsDropped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Flush writes both files' buffers to the files, and fsyncs them if
// WithSync was given. After a failure it still flushes the file that works,
// and returns the sticky error.
func (s *Files) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.usable()
	}
	s.flush()
	return s.err
}

// Close flushes and closes both files. It returns the sticky error, if any,
// or the first error flushing or closing; later calls return the same.
func (s *Files) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closeErr
	}
	s.closed = true
	s.flush()
	for _, lf := range []*logFile{&s.events, &s.metrics, &s.logs} {
		if err := lf.close(); err != nil && s.err == nil {
			s.err = wrapFileErr("close", lf.path, err)
		}
	}
	s.closeErr = s.err
	return s.closeErr
}

func (s *Files) usable() error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

func (s *Files) stamp(t time.Time) time.Time {
	if t.IsZero() {
		return s.now()
	}
	return t
}

func (s *Files) write(lf *logFile, line []byte) error {
	defer s.enc.release() // line is the encoder's buffer
	if s.maxBytes > 0 && s.size+int64(len(line)) > s.maxBytes {
		s.err = fmt.Errorf("%w: %s and %s hold %d bytes, the cap is %d, the next line has %d",
			ErrMaxBytes, EventsFile, MetricsFile, s.size, s.maxBytes, len(line))
		return s.err
	}
	s.size += int64(len(line))
	if _, err := lf.w.Write(line); err != nil {
		s.err = wrapFileErr("write", lf.path, err)
	}
	return s.err
}

// flush flushes (and syncs) both files, recording the first error. It goes
// on to the second file after the first fails: what can be saved is saved.
func (s *Files) flush() {
	for _, lf := range []*logFile{&s.events, &s.metrics, &s.logs} {
		if err := lf.w.Flush(); err != nil {
			s.err = firstErr(s.err, wrapFileErr("write", lf.path, err))
			continue
		}
		if s.sync {
			if err := lf.f.Sync(); err != nil {
				s.err = firstErr(s.err, wrapFileErr("sync", lf.path, err))
			}
		}
	}
}

// firstErr returns the first non-nil error.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (lf *logFile) close() error {
	if lf.f == nil {
		return nil
	}
	err := lf.f.Close()
	lf.f = nil
	return err
}

// wrapFileErr names the file in err exactly once: os errors already are
// *fs.PathError values carrying the path, others are not.
func wrapFileErr(op, path string, err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return fmt.Errorf("logsink: %w", &fs.PathError{Op: op, Path: path, Err: err})
}
