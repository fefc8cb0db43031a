package wire

import "strconv"

// A small validating JSON scanner for the hot notifications' fast paths.
// It accepts exactly the JSON grammar (RFC 8259) except that it leaves
// UTF-8 validation to its callers and refuses nesting deeper than
// maxScanDepth; whatever it refuses goes down the slow path, which decides.

// maxScanDepth bounds nesting; deeper values take the slow path.
const maxScanDepth = 100

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString scans the string starting at b[i] == '"'. It returns the
// index after the closing quote and whether the string has escapes; end is
// -1 if the string is not valid JSON.
func scanString(b []byte, i int) (end int, escaped bool) {
	if i >= len(b) || b[i] != '"' {
		return -1, false
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped
		case c < 0x20:
			return -1, false
		case c == '\\':
			escaped = true
			i++
			if i >= len(b) {
				return -1, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return -1, false
					}
				}
				i += 4
			default:
				return -1, false
			}
		}
	}
	return -1, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber scans the number starting at b[i]. It returns the index after
// it and whether it is a plain integer of at most 15 digits (exact as a
// float64, and written back by encoding/json as it is); end is -1 if it is
// not a valid JSON number, or (when checkRange is set) if it overflows a
// float64, which encoding/json refuses to decode into an interface value.
func scanNumber(b []byte, i int, checkRange bool) (end int, smallInt bool) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return -1, false
	}
	intEnd := i
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return -1, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return -1, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i == intEnd && intEnd-digits <= 15 {
		return i, true
	}
	if checkRange {
		if _, err := strconv.ParseFloat(string(b[start:i]), 64); err != nil {
			return -1, false
		}
	}
	return i, false
}

// scanValue scans the value starting at b[i] (no leading space) and
// returns the index after it, or -1 if it is not valid JSON.
func scanValue(b []byte, i, depth int, checkRange bool) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := scanString(b, i)
		return end
	case c == '{' || c == '[':
		if depth >= maxScanDepth {
			return -1
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1
		}
		for {
			if c == '{' {
				if i = skipSpace(b, i); i >= len(b) || b[i] != '"' {
					return -1
				}
				if i, _ = scanString(b, i); i < 0 {
					return -1
				}
				if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
					return -1
				}
				i++
			}
			if i = scanValue(b, skipSpace(b, i), depth+1, checkRange); i < 0 {
				return -1
			}
			if i = skipSpace(b, i); i >= len(b) {
				return -1
			}
			switch b[i] {
			case ',':
				i++
			case closer:
				return i + 1
			default:
				return -1
			}
		}
	case c == '-' || isDigit(c):
		end, _ := scanNumber(b, i, checkRange)
		return end
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
				return i + len(lit)
			}
		}
		return -1
	}
}
