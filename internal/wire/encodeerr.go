package wire

import (
	"encoding/json"
	"errors"
)

// IsEncodeError reports whether err is encoding/json's refusal to encode a
// value (params, a result): jsonrpc2 returns it before writing anything,
// so the connection is intact.
func IsEncodeError(err error) bool {
	var (
		ute *json.UnsupportedTypeError
		uve *json.UnsupportedValueError
		me  *json.MarshalerError
	)
	return errors.As(err, &ute) || errors.As(err, &uve) || errors.As(err, &me)
}
