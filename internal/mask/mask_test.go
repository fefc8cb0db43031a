package mask_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
)

func newMasker(t *testing.T, s tproxy.Secrets) *mask.Masker {
	t.Helper()
	m, err := mask.NewMasker(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMaskerConfig(t *testing.T) {
	tests := []struct {
		name    string
		secrets tproxy.Secrets
		in      map[string]any
		want    map[string]any
	}{
		{
			name: "default keys any case and separator",
			in: map[string]any{"DB_Password": "hunter22", "apiKey": "k-123456", "x-auth-token": "tok-abcdef",
				"user": "alice", "rows": 10.0},
			want: map[string]any{"DB_Password": tproxy.Masked, "apiKey": tproxy.Masked, "x-auth-token": tproxy.Masked,
				"user": "alice", "rows": 10.0},
		},
		{
			name: "nested and in lists",
			in: map[string]any{"conn": map[string]any{"host": "db", "password": "s3cr3t-pw"},
				"targets": []any{map[string]any{"token": "t0k3n-value"}}},
			want: map[string]any{"conn": map[string]any{"host": "db", "password": tproxy.Masked},
				"targets": []any{map[string]any{"token": tproxy.Masked}}},
		},
		{
			name: "secret value reused under a plain key is masked there too",
			in:   map[string]any{"password": "hunter22", "url": "postgres://bob:hunter22@db/x"},
			want: map[string]any{"password": tproxy.Masked, "url": "postgres://bob:" + tproxy.Masked + "@db/x"},
		},
		{
			name:    "pointers, including short and non-string values",
			secrets: tproxy.Secrets{Pointers: []string{"/conn/dsn", "/pin", "/a~1b", "/list/1"}},
			in: map[string]any{"conn": map[string]any{"dsn": "postgres://u:p@h/db"}, "pin": 1234.0, "a/b": "x",
				"list": []any{"keep", "drop-this"}},
			want: map[string]any{"conn": map[string]any{"dsn": tproxy.Masked}, "pin": tproxy.Masked, "a/b": tproxy.Masked,
				"list": []any{"keep", tproxy.Masked}},
		},
		{
			name:    "extra key patterns",
			secrets: tproxy.Secrets{Keys: []string{"Warehouse-URI", "ref$"}},
			in: map[string]any{"source_warehouse_uri": "postgres://u:pw@h/db", "warehouseUri": "x", "table": "users",
				"vault_ref": "kv/x", "ref_count": 2.0},
			want: map[string]any{"source_warehouse_uri": tproxy.Masked, "warehouseUri": tproxy.Masked, "table": "users",
				"vault_ref": tproxy.Masked, "ref_count": 2.0},
		},
		{
			name: "a secret key holding an object masks the whole object",
			in:   map[string]any{"credentials": map[string]any{"user": "svc", "key": "abcd-efgh"}},
			want: map[string]any{"credentials": tproxy.Masked},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMasker(t, tt.secrets)
			before := cmp.Diff(map[string]any(nil), tt.in)
			got := m.Config(tt.in)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Config (-want +got):\n%s", d)
			}
			if after := cmp.Diff(map[string]any(nil), tt.in); after != before {
				t.Errorf("Config modified its argument")
			}
		})
	}
}

func TestMaskerFreeText(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{})
	m.Config(map[string]any{"password": "hunter22", "token": "hunter22-extended", "pin": "12"})

	if got, want := m.String("login with hunter22-extended or hunter22, pin 12"),
		"login with ***MASKED*** or ***MASKED***, pin 12"; got != want {
		t.Errorf("String = %q, want %q (longest secret first; short values left alone)", got, want)
	}
	e := m.Event(tproxy.Event{Name: "x", Data: map[string]any{
		"msg": "pw=hunter22", "nested": []any{"hunter22"}, "n": 3, "api_key": 99,
		"err": errors.New("auth failed for hunter22"),
		"obj": struct{ Note string }{"hunter22 inside a struct"},
	}})
	want := map[string]any{"msg": "pw=***MASKED***", "nested": []any{"***MASKED***"}, "n": 3, "api_key": tproxy.Masked,
		"err": "auth failed for ***MASKED***", "obj": map[string]any{"Note": "***MASKED*** inside a struct"}}
	if d := cmp.Diff(want, e.Data); d != "" {
		t.Errorf("Event data (-want +got):\n%s", d)
	}
	mt := m.Metric(tproxy.Metric{Name: "q", Tags: map[string]string{"who": "hunter22", "secret_id": "7"}})
	if d := cmp.Diff(map[string]string{"who": tproxy.Masked, "secret_id": tproxy.Masked}, mt.Tags); d != "" {
		t.Errorf("Metric tags (-want +got):\n%s", d)
	}
	r := m.LogRecord(tproxy.LogRecord{Message: "using hunter22", Attrs: map[string]any{"password": "x"}})
	if r.Message != "using ***MASKED***" || r.Attrs["password"] != tproxy.Masked {
		t.Errorf("LogRecord = %+v", r)
	}
	if got := string(m.Bytes([]byte("a hunter22 b"))); got != "a ***MASKED*** b" {
		t.Errorf("Bytes = %q", got)
	}
}

func TestMaskerUnchangedValuesAreNotCopied(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{})
	data := map[string]any{"i": 1, "s": "plain"}
	e := m.Event(tproxy.Event{Data: data})
	e.Data["probe"] = true
	if _, ok := data["probe"]; !ok {
		t.Error("an event with nothing to mask was copied; the hot path must not allocate a copy")
	}
}

func TestNilMaskerMasksNothing(t *testing.T) {
	var m *mask.Masker
	if m.String("hunter22") != "hunter22" || m.SecretKey("password") {
		t.Error("nil Masker masked something")
	}
	cfg := map[string]any{"password": "x"}
	if d := cmp.Diff(cfg, m.Config(cfg)); d != "" {
		t.Error(d)
	}
}

func TestNewMaskerBadPointer(t *testing.T) {
	for _, p := range []string{"", "password", "/a~2"} {
		_, err := mask.NewMasker(tproxy.Secrets{Pointers: []string{p}})
		if err == nil || !strings.Contains(err.Error(), "pointer") {
			t.Errorf("NewMasker(pointer %q) error = %v, want one naming the pointer", p, err)
		}
	}
}
