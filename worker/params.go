package worker

import (
	"encoding/json"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
)

// decodeParams decodes a request's params into v and refuses, with
// -32602, params that lack one of the required members (docs/protocol.md
// section 5): a missing member is a host's mistake to report, not a zero
// value to run with.
func decodeParams(method string, raw json.RawMessage, v any, required ...string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return invalidParams(method, err)
	}
	var members map[string]json.RawMessage
	json.Unmarshal(raw, &members) // an object: it just decoded into v
	for _, m := range required {
		if r, ok := members[m]; !ok || string(r) == "null" {
			return invalidParams(method, fmt.Errorf("the member %q is missing", m))
		}
	}
	return nil
}

// checkStep refuses a manifest step or exec_step whose id, driver or
// inputs break the contract.
func checkStep(method, what, id, driver string, inputs map[string]tproxy.InputRef) *jsonrpc2.Error {
	if err := check.ID("step id", id); err != nil {
		return invalidParams(method, fmt.Errorf("%s: %w", what, err))
	}
	if driver == "" {
		return invalidParams(method, fmt.Errorf("%s: step %q names no driver", what, id))
	}
	for name, ref := range inputs {
		if err := check.ID("from_step", ref.FromStep); err != nil {
			return invalidParams(method, fmt.Errorf("%s: step %q: input %q: %w", what, id, name, err))
		}
		if ref.Key == "" {
			return invalidParams(method, fmt.Errorf("%s: step %q: input %q names no key", what, id, name))
		}
	}
	return nil
}
