package tproxy

// NewStreamBuffered is NewStream with a given read buffer size, so tests
// and fuzzing reach the paths for lines longer than the buffer.
var NewStreamBuffered = newStream
