package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
)

type cfgSource struct {
	Path    string   `json:"path"`
	Columns []string `json:"columns"`
}

type cfgSum struct {
	As   string `json:"as"`
	Expr string `json:"expr"`
}

type cfgBase struct {
	Verbose bool `json:"verbose"`
}

// lenientPart decodes itself, so DecodeConfig checks no keys inside it.
type lenientPart struct{ raw map[string]any }

func (l *lenientPart) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &l.raw) }

type cfgFull struct {
	cfgBase
	Table   string            `json:"table"`
	Port    int               `json:"port"`
	Source  cfgSource         `json:"source"`
	Sum     []cfgSum          `json:"sum"`
	Where   map[string]cfgSum `json:"where"`
	Extra   map[string]any    `json:"extra"`
	Lenient lenientPart       `json:"lenient"`
	Skipped string            `json:"-"`
	NoTag   string
	hidden  string //lint:ignore U1000 present so that a key "hidden" is shown not to reach it
}

type cfgValidated struct {
	URL   string `json:"url"`
	Field bool   `json:"field"`
}

// Validate refuses an empty url; with field set, it names the field.
func (c *cfgValidated) Validate() error {
	if c.URL != "" {
		return nil
	}
	if c.Field {
		return &ConfigError{Field: "url", Reason: `"url" is required`}
	}
	return errors.New("url is required")
}

// TestDecodeConfigStrict: DecodeConfig refuses, as a *ConfigError naming
// the step and the field, every key its target does not take (at any
// depth), names the nearest known key when one is a likely typo, refuses
// values of the wrong type, and runs the target's Validate; it accepts
// what encoding/json accepts (any case, embedded fields) and leaves maps
// and self-decoding types alone.
func TestDecodeConfigStrict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		target func() any
		field  string // "" with reason "" means success
		reason string // a substring of the ConfigError's Reason
	}{
		{"exact keys", `{"table":"t","port":5,"source":{"path":"p","columns":["a"]},"sum":[{"as":"x","expr":"y"}]}`,
			func() any { return &cfgFull{} }, "", ""},
		{"keys in another case, as encoding/json", `{"TABLE":"t","Port":5,"notag":"x"}`,
			func() any { return &cfgFull{} }, "", ""},
		{"an embedded struct's key is promoted", `{"verbose":true}`, func() any { return &cfgFull{} }, "", ""},
		{"any key inside a map of any", `{"extra":{"whatever":1,"nested":{"x":2}}}`, func() any { return &cfgFull{} }, "", ""},
		{"any key inside a type that decodes itself", `{"lenient":{"anything":1}}`, func() any { return &cfgFull{} }, "", ""},
		{"any key into a map target", `{"a":1,"b":{"c":2}}`, func() any { return &map[string]any{} }, "", ""},
		{"nil config", `null`, func() any { return &cfgFull{} }, "", ""},

		{"a typo names the nearest key", `{"tabel":"t"}`, func() any { return &cfgFull{} },
			"tabel", `unknown key "tabel" (did you mean "table"?)`},
		{"a missing letter", `{"prot":5}`, func() any { return &cfgFull{} },
			"prot", `unknown key "prot" (did you mean "port"?)`},
		{"nothing near lists the known keys", `{"frobnicate":1}`, func() any { return &cfgFull{} },
			"frobnicate", `unknown key "frobnicate" (known keys: "NoTag", "extra", "lenient", "port", "source", "sum", "table", "verbose", "where")`},
		{"a key in a nested struct", `{"source":{"pth":"p"}}`, func() any { return &cfgFull{} },
			"source.pth", `unknown key "source.pth" (did you mean "source.path"?)`},
		{"a key in an array of structs", `{"sum":[{"as":"a"},{"ass":"b"}]}`, func() any { return &cfgFull{} },
			"sum[1].ass", `unknown key "sum[1].ass" (did you mean "sum[1].as"?)`},
		{"a key in a map of structs", `{"where":{"region":{"expre":"x"}}}`, func() any { return &cfgFull{} },
			"where.region.expre", `did you mean "where.region.expr"?`},
		{`a json:"-" field takes no key`, `{"Skipped":"x"}`, func() any { return &cfgFull{} },
			"Skipped", `unknown key "Skipped"`},
		{"an unexported field takes no key", `{"hidden":"x"}`, func() any { return &cfgFull{} },
			"hidden", `unknown key "hidden"`},
		{"a struct without fields", `{"x":1}`, func() any { return &struct{}{} },
			"x", `unknown key "x" (this driver's config takes no keys)`},
		{"the first unknown key in sorted order", `{"zz":1,"aa":2}`, func() any { return &cfgFull{} },
			"aa", `unknown key "aa"`},

		{"a value of the wrong type", `{"port":"80"}`, func() any { return &cfgFull{} },
			"port", `"port": got a JSON string, want int`},
		{"a nested value of the wrong type", `{"source":{"columns":"a,b"}}`, func() any { return &cfgFull{} },
			"source.columns", `"source.columns": got a JSON string`},

		{"Validate's error", `{}`, func() any { return &cfgValidated{} }, "", "url is required"},
		{"Validate's ConfigError keeps its field", `{"field":true}`, func() any { return &cfgValidated{} },
			"url", `"url" is required`},
		{"Validate passes", `{"url":"u"}`, func() any { return &cfgValidated{} }, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var config map[string]any
			if err := json.Unmarshal([]byte(tc.config), &config); err != nil {
				t.Fatal(err)
			}
			s := &Step{id: "extract", config: config}
			err := s.DecodeConfig(tc.target())
			if tc.field == "" && tc.reason == "" {
				if err != nil {
					t.Fatalf("DecodeConfig = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("DecodeConfig = %v (%T), want a *ConfigError", err, err)
			}
			if ce.StepID != "extract" || ce.Field != tc.field || !strings.Contains(ce.Reason, tc.reason) {
				t.Errorf("ConfigError = {StepID %q, Field %q, Reason %q}, want step %q, field %q, reason containing %q",
					ce.StepID, ce.Field, ce.Reason, "extract", tc.field, tc.reason)
			}
			if want := `step "extract": config: ` + ce.Reason; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			if got := errorType(context.Background(), err); got != tproxy.ErrorTypeConfig {
				t.Errorf("error type %q, want %q", got, tproxy.ErrorTypeConfig)
			}
		})
	}
}

// TestDecodeConfigWrapsTheCause: the decoder's error stays reachable
// through the ConfigError.
func TestDecodeConfigWrapsTheCause(t *testing.T) {
	s := &Step{id: "s", config: map[string]any{"port": "80"}}
	err := s.DecodeConfig(&cfgFull{})
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		t.Errorf("errors.As(%v, *json.UnmarshalTypeError) = false", err)
	}
	if err := s.DecodeConfig(cfgFull{}); err == nil || errors.As(err, new(*ConfigError)) {
		t.Errorf("DecodeConfig(non-pointer) = %v, want a plain error: the driver's mistake, not the config's", err)
	}
}

// TestNearestKey: a key is a typo of a known one only within 2 edits and
// fewer than half its characters; a swap of neighbours is one edit and
// case does not count.
func TestNearestKey(t *testing.T) {
	known := []string{"group_by", "min_amount", "path", "progress_every", "table"}
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{
		{"tabel", "table", true},
		{"pth", "path", true},
		{"PATH", "path", true},
		{"progres_every", "progress_every", true},
		{"min_amont", "min_amount", true},
		{"groupby", "group_by", true},
		{"ab", "", false},
		{"rows", "", false},
		{"tbl", "", false}, // 2 edits of 3 characters
	} {
		got, ok := nearest(tc.key, known)
		if got != tc.want || ok != tc.ok {
			t.Errorf("nearest(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		a, b string
		d    int
	}{
		{"", "", 0}, {"", "abc", 3}, {"abc", "abc", 0}, {"abc", "acb", 1},
		{"kitten", "sitting", 3}, {"ca", "abc", 3}, {"héllo", "hello", 1},
	} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

type ownType struct{ t string }

func (e ownType) Error() string     { return "own" }
func (e ownType) ErrorType() string { return e.t }

// TestErrorType: a failed step's error type is a category or the
// driver's own name, never a Go type name.
func TestErrorType(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	plain := errors.New("boom")
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{"a plain error", nil, plain, tproxy.ErrorTypeDriver},
		{"a wrapped plain error", nil, fmt.Errorf("reading: %w", plain), tproxy.ErrorTypeDriver},
		{"an *os.PathError", nil, &os.PathError{Op: "open", Path: "x", Err: os.ErrNotExist}, tproxy.ErrorTypeDriver},
		{"Fail with a category", nil, Fail(tproxy.ErrorTypeInput, plain), tproxy.ErrorTypeInput},
		{"Fail with a name of the driver's", nil, fmt.Errorf("x: %w", Fail("missing_table", plain)), "missing_table"},
		{"an ErrorType method", nil, ownType{"quota"}, "quota"},
		{"an empty ErrorType falls through", nil, ownType{""}, tproxy.ErrorTypeDriver},
		{"a ConfigError", nil, &ConfigError{Reason: "x"}, tproxy.ErrorTypeConfig},
		{"a wrapped ConfigError", nil, fmt.Errorf("x: %w", &ConfigError{Reason: "x"}), tproxy.ErrorTypeConfig},
		{"Fail outranks what it wraps", nil, Fail(tproxy.ErrorTypeInput, &ConfigError{Reason: "x"}), tproxy.ErrorTypeInput},
		{"a deadline", nil, fmt.Errorf("query: %w", context.DeadlineExceeded), tproxy.ErrorTypeTimeout},
		{"an I/O deadline", nil, os.ErrDeadlineExceeded, tproxy.ErrorTypeTimeout},
		{"a net-style timeout", nil, fmt.Errorf("get: %w", timeoutErr{}), tproxy.ErrorTypeTimeout},
		{"a panic", nil, &panicError{value: "bug"}, tproxy.ErrorTypePanic},
		{"anything once cancelled", cancelled, errors.New("signal: killed"), tproxy.ErrorTypeCancelled},
		{"a panic once cancelled", cancelled, &panicError{value: "bug"}, tproxy.ErrorTypeCancelled},
	} {
		ctx := tc.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if got := errorType(ctx, tc.err); got != tc.want {
			t.Errorf("%s: errorType(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestFail: Fail keeps the message and the chain, and passes nil through.
func TestFail(t *testing.T) {
	if Fail(tproxy.ErrorTypeInput, nil) != nil {
		t.Error("Fail(nil) != nil")
	}
	err := Fail(tproxy.ErrorTypeInput, fmt.Errorf("input table: %w", os.ErrNotExist))
	if err.Error() != "input table: file does not exist" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Fail = %q, errors.Is(ErrNotExist) = %v", err, errors.Is(err, os.ErrNotExist))
	}
}
