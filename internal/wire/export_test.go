package wire

// NewStreamBuffered is NewStream with a given read buffer size, so tests
// and fuzzing reach the paths for lines longer than the buffer.
var NewStreamBuffered = newStream

// RetainedBuffers returns the capacity of the buffers a stream keeps
// between frames: the read reassembly buffer and the write encoders'.
func RetainedBuffers(s *Stream) int {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return cap(s.line) + s.wbuf.Cap() + cap(s.nbuf)
}
