package conform

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"sort"
	"syscall"
	"time"

	protocheck "github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/worker"
)

// The conformance drivers' names, as docs/protocol.md §13 lists them.
const (
	driverEmit      = "conform.emit"
	driverSleep     = "conform.sleep"
	driverFail      = "conform.fail"
	driverArtifacts = "conform.artifacts"
	driverStdout    = "conform.stdout"
	driverInput     = "conform.input"
)

// driverNames is every conformance driver, sorted as ping lists them.
var driverNames = []string{driverArtifacts, driverEmit, driverFail, driverInput, driverSleep, driverStdout}

// failureType is the error_type of a conform.fail step.
const failureType = "conform_failure"

// RegisterDrivers registers the conformance drivers of docs/protocol.md §13
// on w, so that the kit (Run, Test, tproxy conform) can check the worker:
//
//   - conform.emit (config events: integer) emits that many conform_tick
//     events with data {"i": 0}, {"i": 1}, …, sets the rows processed to
//     events and keeps the output "count" = events.
//   - conform.sleep (config ms: integer) waits that long, or until the
//     step is cancelled; it then returns ctx.Err(), which the runtime
//     reports as error_type "cancelled".
//   - conform.fail (config message: string) fails with that message and
//     error_type "conform_failure".
//   - conform.artifacts (config files: object of string) writes each
//     member as a file, path → UTF-8 contents, into the artifact directory.
//   - conform.stdout (config text: string) prints text to the process's
//     standard output with fmt.Println, os.Stdout.WriteString and a raw
//     write to the stdout file descriptor.
//   - conform.input reads the input "in" and emits an event conform_input
//     with data {"value": <the input>}.
//
// It panics, like Worker.Register, if w already has a driver of one of
// these names.
func RegisterDrivers(w *worker.Worker) {
	w.RegisterFunc(driverEmit, emit)
	w.RegisterFunc(driverSleep, sleep)
	w.RegisterFunc(driverFail, fail)
	w.RegisterFunc(driverArtifacts, artifacts)
	w.RegisterFunc(driverStdout, stdout)
	w.RegisterFunc(driverInput, input)
}

// configInt reads an integer member of the step's config in any JSON
// notation (3, 3.0, 3e0), as §3 requires of every receiver.
func configInt(s *worker.Step, key string) (int64, error) {
	v, ok := s.Config()[key]
	if !ok {
		return 0, fmt.Errorf("config %q is missing", key)
	}
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || math.IsInf(f, 0) || f < 0 || f > 1<<53 {
		return 0, fmt.Errorf("config %q must be a non-negative integer, not %v", key, v)
	}
	return int64(f), nil
}

func emit(ctx context.Context, s *worker.Step) error {
	n, err := configInt(s, "events")
	if err != nil {
		return err
	}
	for i := range n {
		if err := s.Event("conform_tick", map[string]any{"i": i}); err != nil {
			return err
		}
	}
	s.SetRows(n)
	s.SetOutput("count", n)
	return nil
}

func sleep(ctx context.Context, s *worker.Step) error {
	ms, err := configInt(s, "ms")
	if err != nil {
		return err
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		// Returned as is: the runtime recognises the step's own
		// cancellation and reports error_type "cancelled".
		return ctx.Err()
	}
}

// failure is conform.fail's error; its ErrorType is what the runtime
// reports as the step failure's error_type.
type failure struct{ msg string }

func (e *failure) Error() string { return e.msg }

// ErrorType names the failure's kind for the step failure.
func (e *failure) ErrorType() string { return failureType }

func fail(ctx context.Context, s *worker.Step) error {
	msg, ok := s.Config()["message"].(string)
	if !ok {
		return errors.New(`config "message" must be a string`)
	}
	return &failure{msg: msg}
}

func artifacts(ctx context.Context, s *worker.Step) error {
	files, ok := s.Config()["files"].(map[string]any)
	if !ok {
		return errors.New(`config "files" must be an object of strings`)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	// Through os.Root, after the path check: a config cannot make the
	// driver write outside its artifact directory.
	root, err := os.OpenRoot(s.ArtifactDir())
	if err != nil {
		return err
	}
	defer root.Close()
	for _, name := range names {
		content, ok := files[name].(string)
		if !ok {
			return fmt.Errorf("config files[%q] must be a string", name)
		}
		if err := protocheck.ArtifactPath(name); err != nil {
			return err
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if err := root.WriteFile(name, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func stdout(ctx context.Context, s *worker.Step) error {
	text, ok := s.Config()["text"].(string)
	if !ok {
		return errors.New(`config "text" must be a string`)
	}
	// Every way a Go driver or a library it calls reaches fd 1: the fmt
	// package, the os.File, and the file descriptor itself, as C code
	// would. syscall.Stdout is fd 1 on unix and the stdout handle on
	// Windows.
	fmt.Println(text)
	if _, err := os.Stdout.WriteString(text + "\n"); err != nil {
		return err
	}
	if _, err := syscall.Write(syscall.Stdout, []byte(text+"\n")); err != nil {
		return err
	}
	return nil
}

func input(ctx context.Context, s *worker.Step) error {
	v, ok := s.Input("in")
	if !ok {
		return errors.New(`input "in" is missing`)
	}
	return s.Event("conform_input", map[string]any{"value": v})
}
