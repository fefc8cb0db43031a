package e2b

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tproxy/tproxy/internal/e2benvd"
	filesystempb "github.com/tproxy/tproxy/internal/e2benvd/filesystem"
	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
	"github.com/tproxy/tproxy/transport"
)

// publishedEnvd is envd's published process and filesystem schema at
// e2benvd.Version, transcribed field by field (name, number, type, and
// "repeated", "map", "optional" or the oneof a field is in) from the
// definitions envd publishes, independently of the .proto files in
// internal/e2benvd: the contract test holds the two against each other.
// Only the messages tproxy's definitions declare are listed; envd has
// more (Update, the directory watchers), which tproxy does not use.
var publishedEnvd = map[string][]string{
	"process.PTY":                           {"size 1 message"},
	"process.PTY.Size":                      {"cols 1 uint32", "rows 2 uint32"},
	"process.ProcessConfig":                 {"cmd 1 string", "args 2 string repeated", "envs 3 message map", "cwd 4 string optional"},
	"process.ListRequest":                   {},
	"process.ProcessInfo":                   {"config 1 message", "pid 2 uint32", "tag 3 string optional"},
	"process.ListResponse":                  {"processes 1 message repeated"},
	"process.StartRequest":                  {"process 1 message", "pty 2 message optional", "tag 3 string optional", "stdin 4 bool optional"},
	"process.ProcessEvent":                  {"start 1 message oneof:event", "data 2 message oneof:event", "end 3 message oneof:event", "keepalive 4 message oneof:event"},
	"process.ProcessEvent.StartEvent":       {"pid 1 uint32"},
	"process.ProcessEvent.DataEvent":        {"stdout 1 bytes oneof:output", "stderr 2 bytes oneof:output", "pty 3 bytes oneof:output"},
	"process.ProcessEvent.EndEvent":         {"exit_code 1 sint32", "exited 2 bool", "status 3 string", "error 4 string optional"},
	"process.ProcessEvent.KeepAlive":        {},
	"process.StartResponse":                 {"event 1 message"},
	"process.ConnectRequest":                {"process 1 message"},
	"process.ConnectResponse":               {"event 1 message"},
	"process.ProcessInput":                  {"stdin 1 bytes oneof:input", "pty 2 bytes oneof:input"},
	"process.SendInputRequest":              {"process 1 message", "input 2 message"},
	"process.SendInputResponse":             {},
	"process.StreamInputRequest":            {"start 1 message oneof:event", "data 2 message oneof:event", "keepalive 3 message oneof:event"},
	"process.StreamInputRequest.StartEvent": {"process 1 message"},
	"process.StreamInputRequest.DataEvent":  {"input 2 message"},
	"process.StreamInputRequest.KeepAlive":  {},
	"process.StreamInputResponse":           {},
	"process.SendSignalRequest":             {"process 1 message", "signal 2 enum"},
	"process.SendSignalResponse":            {},
	"process.CloseStdinRequest":             {"process 1 message"},
	"process.CloseStdinResponse":            {},
	"process.ProcessSelector":               {"pid 1 uint32 oneof:selector", "tag 2 string oneof:selector"},
	"filesystem.EntryInfo": {"name 1 string", "type 2 enum", "path 3 string", "size 4 int64", "mode 5 uint32", "permissions 6 string",
		"owner 7 string", "group 8 string", "modified_time 9 message", "symlink_target 10 string optional"},
	"filesystem.StatRequest":     {"path 1 string"},
	"filesystem.StatResponse":    {"entry 1 message"},
	"filesystem.MakeDirRequest":  {"path 1 string"},
	"filesystem.MakeDirResponse": {"entry 1 message"},
	"filesystem.MoveRequest":     {"source 1 string", "destination 2 string"},
	"filesystem.MoveResponse":    {"entry 1 message"},
	"filesystem.ListDirRequest":  {"path 1 string", "depth 2 uint32"},
	"filesystem.ListDirResponse": {"entries 1 message repeated"},
	"filesystem.RemoveRequest":   {"path 1 string"},
	"filesystem.RemoveResponse":  {},
}

// publishedEnums are envd's enums at e2benvd.Version.
var publishedEnums = map[string][]string{
	"process.Signal":      {"SIGNAL_UNSPECIFIED 0", "SIGNAL_SIGTERM 15", "SIGNAL_SIGKILL 9"},
	"filesystem.FileType": {"FILE_TYPE_UNSPECIFIED 0", "FILE_TYPE_FILE 1", "FILE_TYPE_DIRECTORY 2", "FILE_TYPE_SYMLINK 3"},
}

// publishedMethods are the RPC paths, with their streaming kinds, that
// the transport calls.
var publishedMethods = map[string]string{
	"process.Process.Start":       "server-stream",
	"process.Process.StreamInput": "client-stream",
	"process.Process.SendInput":   "unary",
	"process.Process.SendSignal":  "unary",
	"process.Process.CloseStdin":  "unary",
	"filesystem.Filesystem.Stat":  "unary",
}

func describeField(f protoreflect.FieldDescriptor) string {
	s := fmt.Sprintf("%s %d %s", f.Name(), f.Number(), f.Kind())
	switch {
	case f.IsMap():
		s += " map"
	case f.IsList():
		s += " repeated"
	case f.ContainingOneof() != nil && !f.ContainingOneof().IsSynthetic():
		s += " oneof:" + string(f.ContainingOneof().Name())
	case f.HasPresence() && f.Kind() != protoreflect.MessageKind:
		s += " optional"
	case f.HasPresence() && f.ContainingOneof() != nil:
		s += " optional" // an explicitly optional message
	}
	return s
}

// TestContractSchema checks the generated descriptors of
// internal/e2benvd against envd's published schema, field by field, and
// that the definitions record the version they match.
func TestContractSchema(t *testing.T) {
	if e2benvd.Version != "0.6.13" {
		t.Errorf("the schema claims envd %s; update publishedEnvd when moving to a new version", e2benvd.Version)
	}
	seen := map[string]bool{}
	for _, fd := range []protoreflect.FileDescriptor{processpb.File_process_process_proto, filesystempb.File_filesystem_filesystem_proto} {
		var walk func(protoreflect.MessageDescriptors)
		walk = func(ms protoreflect.MessageDescriptors) {
			for i := range ms.Len() {
				m := ms.Get(i)
				if m.IsMapEntry() {
					continue
				}
				name := string(m.FullName())
				seen[name] = true
				want, ok := publishedEnvd[name]
				if !ok {
					t.Errorf("message %s is not in envd's published schema", name)
				}
				var got []string
				for j := range m.Fields().Len() {
					got = append(got, describeField(m.Fields().Get(j)))
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s:\n got %v\nwant %v", name, got, want)
				}
				walk(m.Messages())
			}
		}
		walk(fd.Messages())
		for i := range fd.Enums().Len() {
			e := fd.Enums().Get(i)
			var got []string
			for j := range e.Values().Len() {
				v := e.Values().Get(j)
				got = append(got, fmt.Sprintf("%s %d", v.Name(), v.Number()))
			}
			if want := publishedEnums[string(e.FullName())]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("enum %s: got %v, want %v", e.FullName(), got, want)
			}
		}
	}
	for name := range publishedEnvd {
		if !seen[name] {
			t.Errorf("published message %s is missing from the definitions", name)
		}
	}
	for full, kind := range publishedMethods {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(full))
		if err != nil {
			t.Errorf("method %s: %v", full, err)
			continue
		}
		m := d.(protoreflect.MethodDescriptor)
		got := "unary"
		switch {
		case m.IsStreamingClient() && m.IsStreamingServer():
			got = "bidi"
		case m.IsStreamingClient():
			got = "client-stream"
		case m.IsStreamingServer():
			got = "server-stream"
		}
		if got != kind {
			t.Errorf("method %s is %s, want %s", full, got, kind)
		}
	}
}

// TestContractRoundTrip round-trips every message the transport sends or
// parses, with every field it uses set, through protojson (the JSON
// codec) and the binary codec, and checks the JSON names envd's JSON
// uses.
func TestContractRoundTrip(t *testing.T) {
	cwd, tag, yes, errText, target := "/home/user", "t", true, "exit status 3", "/x"
	msgs := []struct {
		msg   proto.Message
		names []string // JSON names that must appear
	}{
		{&processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "/bin/w", Args: []string{"-x"}, Envs: map[string]string{"A": "1"}, Cwd: &cwd},
			Tag: &tag, Stdin: &yes, Pty: &processpb.PTY{Size: &processpb.PTY_Size{Cols: 80, Rows: 24}}},
			[]string{`"process"`, `"cmd"`, `"args"`, `"envs"`, `"cwd"`, `"stdin"`, `"pty"`}},
		{&processpb.StartResponse{Event: &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Start{Start: &processpb.ProcessEvent_StartEvent{Pid: 42}}}}, []string{`"event"`, `"start"`, `"pid"`}},
		{&processpb.StartResponse{Event: &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Data{Data: &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Stdout{Stdout: []byte("hé\n")}}}}}, []string{`"data"`, `"stdout"`}},
		{&processpb.StartResponse{Event: &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Data{Data: &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Stderr{Stderr: []byte("oops")}}}}}, []string{`"stderr"`}},
		{&processpb.StartResponse{Event: &processpb.ProcessEvent{Event: &processpb.ProcessEvent_End{End: &processpb.ProcessEvent_EndEvent{ExitCode: -3, Exited: true, Status: "exit status 3", Error: &errText}}}}, []string{`"end"`, `"exitCode"`, `"exited"`, `"status"`, `"error"`}},
		{&processpb.StartResponse{Event: &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Keepalive{Keepalive: &processpb.ProcessEvent_KeepAlive{}}}}, []string{`"keepalive"`}},
		{&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Start{Start: &processpb.StreamInputRequest_StartEvent{Process: pidSelector(7)}}}, []string{`"start"`, `"process"`, `"pid"`}},
		{&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Data{Data: &processpb.StreamInputRequest_DataEvent{Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte{0, 1, 255}}}}}}, []string{`"data"`, `"input"`, `"stdin"`}},
		{&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Keepalive{Keepalive: &processpb.StreamInputRequest_KeepAlive{}}}, []string{`"keepalive"`}},
		{&processpb.SendInputRequest{Process: pidSelector(7), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("x")}}}, []string{`"process"`, `"input"`}},
		{&processpb.SendSignalRequest{Process: pidSelector(7), Signal: processpb.Signal_SIGNAL_SIGKILL}, []string{`"signal"`, `"SIGNAL_SIGKILL"`}},
		{&processpb.CloseStdinRequest{Process: &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Tag{Tag: "t"}}}, []string{`"tag"`}},
		{&filesystempb.StatRequest{Path: "/x"}, []string{`"path"`}},
		{&filesystempb.StatResponse{Entry: &filesystempb.EntryInfo{Name: "x", Type: filesystempb.FileType_FILE_TYPE_FILE, Path: "/x", Size: 3, Mode: 0o755,
			Permissions: "-rwxr-xr-x", Owner: "user", Group: "user", ModifiedTime: timestamppb.Now(), SymlinkTarget: &target}},
			[]string{`"entry"`, `"FILE_TYPE_FILE"`, `"modifiedTime"`, `"symlinkTarget"`, `"permissions"`}},
	}
	for _, tt := range msgs {
		name := string(tt.msg.ProtoReflect().Descriptor().FullName())
		js, err := protojson.Marshal(tt.msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, n := range tt.names {
			if !strings.Contains(string(js), n) {
				t.Errorf("%s: JSON %s lacks %s", name, js, n)
			}
		}
		back := tt.msg.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal(js, back); err != nil || !proto.Equal(back, tt.msg) {
			t.Errorf("%s: JSON round trip %s: %v", name, js, err)
		}
		bin, err := proto.Marshal(tt.msg)
		if err != nil {
			t.Fatal(err)
		}
		back = tt.msg.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(bin, back); err != nil || !proto.Equal(back, tt.msg) {
			t.Errorf("%s: binary round trip: %v", name, err)
		}
	}
	// envd's JSON, as a JSON client receives it: proto names accepted
	// too, as proto3 JSON parsers must.
	var r processpb.StartResponse
	if err := protojson.Unmarshal([]byte(`{"event":{"end":{"exit_code":4,"exited":true,"status":"exit status 4"}}}`), &r); err != nil || r.GetEvent().GetEnd().GetExitCode() != 4 {
		t.Errorf("proto field names: %v %v", err, &r)
	}
}

// TestExitStatus pins how envd's end events map to the exit statuses the
// subprocess transport reports.
func TestExitStatus(t *testing.T) {
	e := func(code int32, exited bool, status, err string) *processpb.ProcessEvent_EndEvent {
		ev := &processpb.ProcessEvent_EndEvent{ExitCode: code, Exited: exited, Status: status}
		if err != "" {
			ev.Error = &err
		}
		return ev
	}
	for _, tt := range []struct {
		in   *processpb.ProcessEvent_EndEvent
		want transport.ExitStatus
	}{
		{e(0, true, "exit status 0", ""), transport.ExitStatus{}},
		{e(3, true, "exit status 3", "exit status 3"), transport.ExitStatus{Code: 3}},
		{e(0, false, "exit status 4", ""), transport.ExitStatus{Code: 4}},
		{e(-1, false, "signal: killed", "signal: killed"), transport.ExitStatus{Code: -1, Signal: syscall.SIGKILL}},
		{e(-1, false, "signal: terminated", ""), transport.ExitStatus{Code: -1, Signal: syscall.SIGTERM}},
		{e(-1, false, "signal: segmentation fault (core dumped)", ""), transport.ExitStatus{Code: -1, Signal: syscall.SIGSEGV}},
		{e(-1, false, "", "context deadline exceeded"), transport.ExitStatus{Code: -1, Reason: "context deadline exceeded"}},
		{e(0, false, "", ""), transport.ExitStatus{Code: -1, Reason: "the process ended without an exit status"}},
	} {
		if got := exitStatus(tt.in); got != tt.want {
			t.Errorf("%v: %#v, want %#v", tt.in, got, tt.want)
		}
	}
}
