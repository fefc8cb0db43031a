module github.com/tproxy/tproxy

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/sourcegraph/jsonrpc2 v0.2.3
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require (
	connectrpc.com/connect v1.21.1
	github.com/goccy/go-yaml v1.19.2
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3
	golang.org/x/sync v0.25.0
	google.golang.org/protobuf v1.36.11
)

require golang.org/x/text v0.14.0 // indirect
