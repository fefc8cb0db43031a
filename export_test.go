package tproxy

// NewStreamBuffered is NewStream with a given read buffer size, so tests
// and fuzzing reach the paths for lines longer than the buffer.
var NewStreamBuffered = newStream

// ReadBufferSize returns the size of the stream's read buffer.
func ReadBufferSize(s *Stream) int { return s.r.Size() }
