package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
)

// quoteLen is how many bytes of an offending frame an error quotes.
const quoteLen = 64

// Stream frames JSON-RPC 2.0 messages as newline-delimited JSON over a byte
// stream. It implements jsonrpc2.ObjectStream.
//
// Reads reassemble lines from bytes that arrive in arbitrary chunks; blank
// lines are skipped; a line over the cap is discarded without being
// buffered whole and reported as a FrameError (the stream stays usable for
// the frames after it). Writes refuse a message over the cap before any of
// it is written. Read methods must be called from one goroutine; writes
// may come from any number: they are queued in order, and one writer at a
// time writes everything queued so far in a single Write, so frames queued
// while a Write is in progress are coalesced into the next one. Every
// write returns once its frame is written, except QueueNotification's,
// which returns once it is queued.
type Stream struct {
	rwc io.ReadWriteCloser
	r   *bufio.Reader
	max int

	line []byte // reassembly buffer for lines longer than r's buffer
	skip bool   // the rest of an oversize line is yet to be skipped

	wmu  sync.Mutex
	wbuf bytes.Buffer // WriteObject's and WriteFrame's encoding buffer
	enc  *json.Encoder
	nbuf []byte // the other writes' encoding buffer

	// Frames are queued, then written by one goroutine at a time, which
	// writes everything queued so far in one go: see queueLocked.
	wcond   sync.Cond // on wmu: signalled after each write
	pending []byte    // queued, not yet being written
	spare   []byte    // the other buffer, reused
	queued  int64     // bytes ever queued
	written int64     // bytes ever written
	writing bool      // a goroutine is writing
	werr    error     // the first write error; sticky
}

var _ jsonrpc2.ObjectStream = (*Stream)(nil)

// maxRetained is the largest buffer a Stream keeps between frames: one
// that a huge frame grew is dropped once the frame is done with, so that
// an idle session does not hold it.
const maxRetained = 64 << 10

// readBuf is the read buffer's size: a longer line is reassembled. It is
// small enough that an idle connection costs little.
const readBuf = 8 << 10

// NewStream returns a Stream over rwc with a frame cap of maxFrame bytes
// (DefaultMaxFrameSize when maxFrame <= 0). Closing the Stream closes rwc.
func NewStream(rwc io.ReadWriteCloser, maxFrame int) *Stream {
	return newStream(rwc, maxFrame, readBuf)
}

func newStream(rwc io.ReadWriteCloser, maxFrame, bufSize int) *Stream {
	if maxFrame <= 0 {
		maxFrame = tproxy.DefaultMaxFrameSize
	}
	return &Stream{rwc: rwc, r: bufio.NewReaderSize(rwc, bufSize), max: maxFrame}
}

// MaxFrameSize returns the stream's frame cap in bytes.
func (s *Stream) MaxFrameSize() int { return s.max }

// ReadFrame returns the next non-blank line without its line ending. The
// returned slice is valid until the next call. At the end of the stream it
// returns io.EOF; a partial last line is a FrameError wrapping
// io.ErrUnexpectedEOF.
func (s *Stream) ReadFrame() ([]byte, error) {
	if cap(s.line) > maxRetained {
		s.line = nil // one huge frame must not pin its buffer for good
	}
	for {
		if s.skip {
			if err := s.skipRest(); err != nil {
				return nil, err
			}
		}
		frame, err := s.readLine()
		if err != nil {
			return nil, err
		}
		frame = bytes.TrimRight(frame, "\r")
		if len(bytes.TrimSpace(frame)) == 0 {
			continue
		}
		return frame, nil
	}
}

func (s *Stream) readLine() ([]byte, error) {
	chunk, err := s.r.ReadSlice('\n')
	if err == nil {
		// Fast path: the whole line is in the reader's buffer.
		if len(chunk)-1 > s.max {
			return nil, s.tooLarge(chunk[:len(chunk)-1], len(chunk)-1)
		}
		return chunk[:len(chunk)-1], nil
	}
	s.line = append(s.line[:0], chunk...)
	for err == bufio.ErrBufferFull {
		if len(s.line) > s.max {
			// Reported now, not at a newline that may never come; the
			// next read skips the rest without buffering it.
			fe := s.tooLarge(s.line, len(s.line))
			s.line, s.skip = s.line[:0], true
			return nil, fe
		}
		chunk, err = s.r.ReadSlice('\n')
		s.line = append(s.line, chunk...)
	}
	switch {
	case err == nil:
		n := len(s.line) - 1
		if n > s.max {
			return nil, s.tooLarge(s.line[:n], n)
		}
		return s.line[:n], nil
	case err == io.EOF && len(s.line) > s.max:
		// Over the cap even if blank, as a terminated line would be and
		// whatever the buffer size was.
		return nil, s.tooLarge(s.line, len(s.line))
	case err == io.EOF && len(bytes.TrimSpace(s.line)) == 0:
		return nil, io.EOF
	case err == io.EOF:
		return nil, &tproxy.FrameError{Op: "read", Reason: "stream ended inside a frame",
			Size: len(s.line), Quote: quote(s.line), Err: io.ErrUnexpectedEOF}
	default:
		return nil, err
	}
}

// skipRest skips the rest of an oversize line, keeping memory bounded.
func (s *Stream) skipRest() error {
	for {
		_, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			continue
		}
		s.skip = false
		return err
	}
}

func (s *Stream) tooLarge(frame []byte, n int) error {
	return &tproxy.FrameError{Op: "read", Reason: "frame too large", Size: n, Limit: s.max, Quote: quote(frame), Err: tproxy.ErrFrameTooLarge}
}

// ReadObject reads the next frame and decodes it into v. It implements
// jsonrpc2.ObjectStream.
func (s *Stream) ReadObject(v any) error {
	frame, err := s.ReadFrame()
	if err != nil {
		return err
	}
	return DecodeFrame(frame, v)
}

// DecodeFrame decodes one frame into v, reporting what is wrong with it as
// a FrameError: invalid UTF-8, a batch (not used by this protocol), invalid
// JSON, or JSON that v refuses (for jsonrpc2's message type: not a JSON-RPC
// 2.0 message).
func DecodeFrame(frame []byte, v any) error {
	reason := ""
	var cause error
	switch {
	case len(frame) == 0:
		reason = "empty frame"
	case !utf8.Valid(frame):
		reason = "invalid UTF-8"
	case frame[0] == '[':
		reason = "JSON-RPC batches are not supported"
	default:
		if err := json.Unmarshal(frame, v); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				reason = "invalid JSON"
			} else {
				reason = "not a JSON-RPC 2.0 message"
			}
			cause = err
		}
	}
	if reason == "" {
		return nil
	}
	return &tproxy.FrameError{Op: "read", Reason: reason, Size: len(frame), Quote: quote(frame), Err: cause}
}

// WriteObject encodes obj as one line and writes it. It implements
// jsonrpc2.ObjectStream.
func (s *Stream) WriteObject(obj any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf.Reset()
	if s.enc == nil {
		s.enc = json.NewEncoder(&s.wbuf)
		s.enc.SetEscapeHTML(false)
	}
	if err := s.enc.Encode(obj); err != nil {
		return fmt.Errorf("tproxy: encode message: %w", err)
	}
	defer s.shrinkLocked()
	return s.queueLocked(s.wbuf.Bytes())
}

// shrinkLocked drops the encoding buffers a huge frame grew; what was
// queued is a copy.
func (s *Stream) shrinkLocked() {
	if s.wbuf.Cap() > maxRetained {
		s.wbuf = bytes.Buffer{} // s.enc writes to &s.wbuf, which stays
	}
	if cap(s.nbuf) > maxRetained {
		s.nbuf = nil
	}
}

// WriteFrame writes one already-encoded message. frame must be a single
// line of JSON; a trailing newline is added if missing.
func (s *Stream) WriteFrame(frame []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(frame) == 0 || frame[len(frame)-1] != '\n' {
		s.wbuf.Reset()
		s.wbuf.Write(frame)
		s.wbuf.WriteByte('\n')
		frame = s.wbuf.Bytes()
	}
	defer s.shrinkLocked()
	return s.queueLocked(frame)
}

// WriteNotification queues the JSON-RPC 2.0 notification of method with
// params: the same bytes that jsonrpc2's Conn.Notify writes through
// WriteObject, encoded by AppendNotification without jsonrpc2's maps. It
// is for the worker's hot notifications.
//
// Like every write it returns once its frame has been written: an event a
// driver emitted is in the pipe before the driver's next statement runs,
// so a worker that exits or crashes right after loses nothing it emitted.
// Notifications from several goroutines that queue while a write is in
// progress go out together in the next one.
func (s *Stream) WriteNotification(method string, params any) error {
	return s.notify(method, params, true)
}

// QueueNotification is WriteNotification without the wait: it returns
// once the notification is queued. If no write is in progress it starts
// one, in a goroutine of its own that writes whatever is queued until
// nothing is, so that an idle peer still gets the notification at once
// and notifications queued meanwhile share a Write. Every other write
// waits for what was queued before it, so a response never overtakes a
// queued notification; Flush waits for all of it.
//
// The price of not waiting: a notification still queued when the process
// ends abruptly (os.Exit, a crash, SIGKILL) is lost. A write error is
// returned by the next call.
func (s *Stream) QueueNotification(method string, params any) error {
	return s.notify(method, params, false)
}

// notify encodes and queues a notification, waiting for it to be written
// if wait is set.
func (s *Stream) notify(method string, params any, wait bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Wait for room before encoding: nbuf is shared, and waiting lets
	// other writers in.
	for len(s.pending) >= maxQueued && s.werr == nil {
		s.waitLocked()
	}
	line, err := AppendNotification(s.nbuf[:0], method, params)
	if err != nil {
		return fmt.Errorf("tproxy: encode message: %w", err)
	}
	s.nbuf = line[:0]
	defer s.shrinkLocked()
	if err := s.checkSize(line, len(line)-1); err != nil {
		return err
	}
	return s.enqueueLocked(line, wait)
}

// HoldNotification queues a notification like QueueNotification, but
// starts no write: it goes out with the next message written (or at
// Flush), in the same Write.
func (s *Stream) HoldNotification(method string, params any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return s.werr
	}
	line, err := AppendNotification(s.nbuf[:0], method, params)
	if err != nil {
		return fmt.Errorf("tproxy: encode message: %w", err)
	}
	s.nbuf = line[:0]
	defer s.shrinkLocked()
	if err := s.checkSize(line, len(line)-1); err != nil {
		return err
	}
	s.pending = append(s.pending, line...)
	s.queued += int64(len(line))
	return nil
}

// Flush writes what is held and waits until everything queued has been
// written, and returns the first write error, if any.
func (s *Stream) Flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for s.written < s.queued && s.werr == nil {
		if !s.writing {
			s.writing = true
			s.drainLocked()
			continue
		}
		s.waitLocked()
	}
	for s.writing && s.werr == nil {
		s.waitLocked()
	}
	return s.werr
}

// maxQueued bounds the bytes queued by WriteNotification.
const maxQueued = 256 << 10

// checkSize refuses to write a frame of n bytes (frame is where it
// starts) over the cap.
func (s *Stream) checkSize(frame []byte, n int) error {
	if n > s.max {
		return &tproxy.FrameError{Op: "write", Reason: "frame too large", Size: n, Limit: s.max, Quote: quote(frame), Err: tproxy.ErrFrameTooLarge}
	}
	return nil
}

// queueLocked queues line (one frame and its newline) and returns once it
// is written: by this goroutine, with everything queued before it, if no
// write is in progress; else by the writer in progress, in its next Write
// (group commit).
func (s *Stream) queueLocked(line []byte) error {
	if err := s.checkSize(line, len(line)-1); err != nil {
		return err
	}
	return s.enqueueLocked(line, true)
}

// enqueueLocked queues frames already checked against the cap. If no write
// is in progress it starts one: in this goroutine when wait is set, else
// in a goroutine of its own. With wait, it returns once they are written.
func (s *Stream) enqueueLocked(line []byte, wait bool) error {
	if s.werr != nil {
		return s.werr
	}
	s.pending = append(s.pending, line...)
	s.queued += int64(len(line))
	end := s.queued
	if !s.writing {
		s.writing = true
		if !wait {
			go func() {
				s.wmu.Lock()
				defer s.wmu.Unlock()
				s.drainLocked()
			}()
			return nil
		}
		s.drainLocked()
	}
	if !wait {
		return nil
	}
	for s.written < end && s.werr == nil {
		s.waitLocked()
	}
	if s.written < end {
		return s.werr
	}
	return nil
}

// waitLocked waits for a write to end. The line a caller encoded in a
// shared buffer must be queued before: others encode while it waits.
func (s *Stream) waitLocked() {
	if s.wcond.L == nil {
		s.wcond.L = &s.wmu
	}
	s.wcond.Wait()
}

func (s *Stream) broadcastLocked() {
	if s.wcond.L != nil {
		s.wcond.Broadcast()
	}
}

// drainLocked writes what is queued until nothing is, then marks the
// stream as not writing. It releases wmu during each write, so that more
// can be queued meanwhile and written together in the next one.
func (s *Stream) drainLocked() {
	for len(s.pending) > 0 && s.werr == nil {
		buf := s.pending
		s.pending = s.spare[:0]
		s.wmu.Unlock()
		n, err := s.rwc.Write(buf)
		s.wmu.Lock()
		s.written += int64(n)
		s.spare = nil
		if cap(buf) <= maxQueued { // keep the buffer, unless a burst grew it
			s.spare = buf[:0]
		}
		if err != nil {
			s.werr = err
			s.pending = nil
		}
		s.broadcastLocked()
	}
	s.writing = false
	s.broadcastLocked()
}

// Close closes the underlying stream.
func (s *Stream) Close() error { return s.rwc.Close() }

// quote returns a copy of the first quoteLen bytes of b, cut at a UTF-8
// boundary when b is valid UTF-8 there.
func quote(b []byte) []byte {
	if len(b) > quoteLen {
		n := quoteLen
		for n > quoteLen-utf8.UTFMax && n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		b = b[:n]
	}
	return bytes.Clone(b)
}
