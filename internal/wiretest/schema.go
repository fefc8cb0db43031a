// Package wiretest checks tproxy's wire traffic against the JSON Schemas
// in docs/schema, which state the field tables of docs/protocol.md in
// machine-checkable form.
//
// It is a test helper: only _test.go files import it, so its schema
// library never reaches a program that imports the module. Tests wrap the
// connections they make in a tap (Transport, Serve, Conn) so that every
// frame the Go host and the Go worker write is validated while the tests
// run; a frame that does not validate fails the test. The schemas are
// written from the document, not from the Go types, so that a Go frame
// the document calls wrong shows up here.
package wiretest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Methods lists the protocol's methods, each with a schema of its
// response (docs/schema/METHOD.response.schema.json).
var Methods = []string{"ping", "prepare", "exec_step", "cleanup", "fetch_artifact"}

// schemas are the compiled schemas the validators use.
type schemas struct {
	dir       string
	host      *jsonschema.Schema
	worker    *jsonschema.Schema
	responses map[string]*jsonschema.Schema // by method
}

// load compiles the schemas once per process: compiling takes far longer
// than validating a frame, and every tap of every test shares them.
var load = sync.OnceValues(func() (*schemas, error) {
	dir, err := SchemaDir()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("wiretest: %s: %w", f, err)
		}
		// Each file's $id is relative, so it resolves against the URL
		// it is added under: the files find each other as siblings, as
		// they would for any tool that loads them from disk.
		if err := c.AddResource(f, doc); err != nil {
			return nil, fmt.Errorf("wiretest: %s: %w", f, err)
		}
	}
	s := &schemas{dir: dir, responses: map[string]*jsonschema.Schema{}}
	compile := func(name string) (*jsonschema.Schema, error) {
		sch, err := c.Compile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("wiretest: compile %s: %w", name, err)
		}
		return sch, nil
	}
	if s.host, err = compile("host-to-worker.schema.json"); err != nil {
		return nil, err
	}
	if s.worker, err = compile("worker-to-host.schema.json"); err != nil {
		return nil, err
	}
	for _, m := range Methods {
		if s.responses[m], err = compile(m + ".response.schema.json"); err != nil {
			return nil, err
		}
	}
	// Compile every file, also those no direction schema refers to, so
	// that a broken schema fails here rather than go unnoticed.
	for _, f := range files {
		if _, err := compile(filepath.Base(f)); err != nil {
			return nil, err
		}
	}
	return s, nil
})

// SchemaDir returns the directory holding the schemas, docs/schema of
// the module's source tree. It is found from this file's compile-time
// path, or, when that is not a path on this machine (a -trimpath build),
// by walking up from the working directory to the module's go.mod; tests
// run in their package's directory, inside the module.
func SchemaDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "docs", "schema")
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/tproxy/tproxy\n")) {
			return filepath.Join(dir, "docs", "schema"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("wiretest: docs/schema not found: not inside the module github.com/tproxy/tproxy")
		}
	}
}

// frame is a decoded frame with what the taps need to know of it.
type frame struct {
	doc any
	// idKey is IDKey of its id, when it has a string or number id.
	idKey string
	// method is its method, when it has a string one.
	method string
}

// isRequest reports whether f has a method and an id, as a request does.
func (f *frame) isRequest() bool { return f.method != "" && f.idKey != "" }

// decode parses one frame: a line without its line ending. The checks
// before the schema are the framing rules of section 2 that a schema
// cannot state: valid UTF-8, one JSON value.
func decode(b []byte) (*frame, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not one JSON value: %w", err)
	}
	f := &frame{doc: doc}
	if obj, ok := doc.(map[string]any); ok {
		f.method, _ = obj["method"].(string)
		if id, ok := obj["id"]; ok {
			f.idKey, _ = IDKey(id)
		}
	}
	return f, nil
}

// IDKey returns the key under which a request's id is matched with its
// response's, for an id decoded by encoding/json with UseNumber (as the
// schema library decodes): a string and a number never match, and numbers
// match by value, whatever their notation (3, 3.0 and 3e0 are one id).
// ok is false for any other value, null included.
func IDKey(id any) (key string, ok bool) {
	switch v := id.(type) {
	case string:
		return "s:" + v, true
	case json.Number:
		r, ok := new(big.Rat).SetString(string(v))
		if !ok {
			return "", false
		}
		return "n:" + r.RatString(), true
	case float64:
		return "n:" + new(big.Rat).SetFloat64(v).RatString(), true
	}
	return "", false
}

// ValidateHostFrame validates one frame a host writes, without its line
// ending, against host-to-worker.schema.json.
func ValidateHostFrame(b []byte) error {
	_, err := validateHost(b)
	return err
}

// validateHost is ValidateHostFrame, also returning the decoded frame
// (nil if it is not JSON) so that a tap notes a request's method without
// decoding it twice.
func validateHost(b []byte) (*frame, error) {
	s, err := load()
	if err != nil {
		return nil, err
	}
	f, err := decode(b)
	if err != nil {
		return nil, err
	}
	return f, s.host.Validate(f.doc)
}

// RequestOf reports the IDKey and method of a frame if it is a request,
// so that a caller can give ValidateWorkerFrame the methods of the
// requests it saw.
func RequestOf(b []byte) (idKey, method string, ok bool) {
	f, err := decode(b)
	if err != nil || !f.isRequest() {
		return "", "", false
	}
	return f.idKey, f.method, true
}

// ValidateWorkerFrame validates one frame a worker writes, without its
// line ending, against worker-to-host.schema.json and, when it is a
// response, against the response schema of its request's method: a
// response does not carry the method, so methodOf gives it, from the IDKey
// of the response's id ("" when unknown, or for a method of the worker's
// own, whose results only worker-to-host.schema.json checks). methodOf
// may be nil.
func ValidateWorkerFrame(b []byte, methodOf func(idKey string) string) error {
	_, err := validateWorker(b, methodOf)
	return err
}

// validateWorker is ValidateWorkerFrame, also returning the decoded frame
// (nil if it is not JSON).
func validateWorker(b []byte, methodOf func(idKey string) string) (*frame, error) {
	s, err := load()
	if err != nil {
		return nil, err
	}
	f, err := decode(b)
	if err != nil {
		return nil, err
	}
	if err := s.worker.Validate(f.doc); err != nil {
		return f, err
	}
	if f.method != "" || f.idKey == "" || methodOf == nil {
		return f, nil
	}
	if sch := s.responses[methodOf(f.idKey)]; sch != nil {
		return f, sch.Validate(f.doc)
	}
	return f, nil
}
