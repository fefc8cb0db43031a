package tproxy

import (
	"encoding/json"
	"math"
	"reflect"
	"strconv"
)

// integer decodes what docs/protocol.md calls an integer: a JSON number
// with an integral value, in any notation (3, 3.0, 3e0). Workers in other
// languages write counts as floats, and refusing 3.0 rows would lose
// nothing but the run.
type integer int64

// maxExactInt is the largest integer every float64 holds exactly.
const maxExactInt = 1 << 53

func (n *integer) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" { // as encoding/json leaves an int alone on null
		return nil
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = integer(v)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxExactInt {
		return &json.UnmarshalTypeError{Value: "number " + s, Type: reflect.TypeFor[int64]()}
	}
	*n = integer(f)
	return nil
}

// The result types' decoders below take every integer member as an
// integer: the outer field shadows the embedded one of the same name.

// UnmarshalJSON decodes an exec_step result, taking rows_processed in any
// integral notation.
func (r *ExecStepResult) UnmarshalJSON(b []byte) error {
	type plain ExecStepResult
	v := struct {
		*plain
		RowsProcessed integer `json:"rows_processed"`
	}{plain: (*plain)(r), RowsProcessed: integer(r.RowsProcessed)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.RowsProcessed = int64(v.RowsProcessed)
	return nil
}

// UnmarshalJSON decodes a cleanup result, taking its counts in any
// integral notation.
func (r *CleanupResult) UnmarshalJSON(b []byte) error {
	type plain CleanupResult
	v := struct {
		*plain
		StepsExecuted integer `json:"steps_executed"`
		TotalRows     integer `json:"total_rows"`
	}{plain: (*plain)(r), StepsExecuted: integer(r.StepsExecuted), TotalRows: integer(r.TotalRows)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.StepsExecuted, r.TotalRows = int(v.StepsExecuted), int64(v.TotalRows)
	return nil
}

// UnmarshalJSON decodes an artifact's description, taking its size in any
// integral notation.
func (a *Artifact) UnmarshalJSON(b []byte) error {
	type plain Artifact
	v := struct {
		*plain
		Size integer `json:"size"`
	}{plain: (*plain)(a), Size: integer(a.Size)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	a.Size = int64(v.Size)
	return nil
}

// UnmarshalJSON decodes ping params, taking protocol in any integral
// notation.
func (p *PingParams) UnmarshalJSON(b []byte) error {
	type plain PingParams
	v := struct {
		*plain
		Protocol integer `json:"protocol"`
	}{plain: (*plain)(p), Protocol: integer(p.Protocol)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.Protocol = int(v.Protocol)
	return nil
}

// UnmarshalJSON decodes fetch_artifact params, taking offset and length
// in any integral notation.
func (p *FetchArtifactParams) UnmarshalJSON(b []byte) error {
	type plain FetchArtifactParams
	v := struct {
		*plain
		Offset integer `json:"offset"`
		Length integer `json:"length"`
	}{plain: (*plain)(p), Offset: integer(p.Offset), Length: integer(p.Length)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.Offset, p.Length = int64(v.Offset), int(v.Length)
	return nil
}

// UnmarshalJSON decodes a ping result, with protocol held to
// docs/protocol.md's integer.
func (r *PingResult) UnmarshalJSON(b []byte) error {
	type plain PingResult // without this method
	v := struct {
		*plain
		Protocol integer `json:"protocol"`
	}{plain: (*plain)(r), Protocol: integer(r.Protocol)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.Protocol = int(v.Protocol)
	return nil
}
