// Package e2benvd holds the wire schema of envd, the daemon inside every E2B
// sandbox, for tproxy's E2B transport and its local fake: .proto
// definitions of the process and filesystem services and the Go code
// generated from them (protoc-gen-go and protoc-gen-connect-go), committed
// so that users and CI need no protoc.
//
// To regenerate, with protoc on PATH (Debian: apt-get install
// protobuf-compiler) and the pinned plugins:
//
//	GOBIN=/tmp/gobin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
//	GOBIN=/tmp/gobin go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
//	PATH=/tmp/gobin:$PATH go generate ./internal/e2benvd
package e2benvd

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --connect-go_out=. --connect-go_opt=paths=source_relative process/process.proto filesystem/filesystem.proto

// Version is the envd release whose published process and filesystem
// services the definitions here match.
const Version = "0.6.13"
