package mask_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
)

// secretKeyCases are testdata/secret_keys.json, which the Python worker's
// tests read too, so that both runtimes keep one rule.
type secretKeyCases struct {
	// Secret are config key names that hold credentials in the wild
	// (environment variables, SDK options, HTTP headers, connection
	// settings): the default patterns must match every one.
	Secret []string `json:"secret"`
	// Harmless look like credential names but are not: matching them
	// would mask ordinary values wherever they appear in free text.
	Harmless []string `json:"harmless"`
	// Patterns pin the rule itself, for patterns a caller adds.
	Patterns []struct {
		Pattern string `json:"pattern"`
		Key     string `json:"key"`
		Match   bool   `json:"match"`
	} `json:"patterns"`
}

func loadSecretKeyCases(t *testing.T) secretKeyCases {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "secret_keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c secretKeyCases
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Secret) < 50 || len(c.Harmless) < 20 || len(c.Patterns) == 0 {
		t.Fatalf("testdata/secret_keys.json has %d secret, %d harmless keys, %d patterns", len(c.Secret), len(c.Harmless), len(c.Patterns))
	}
	return c
}

func TestDefaultSecretKeysMatchCredentialNames(t *testing.T) {
	c := loadSecretKeyCases(t)
	m := newMasker(t, tproxy.Secrets{})
	for _, k := range c.Secret {
		if !m.SecretKey(k) {
			t.Errorf("SecretKey(%q) = false: a credential key name is not a secret key", k)
		}
	}
	for _, k := range c.Harmless {
		if m.SecretKey(k) {
			t.Errorf("SecretKey(%q) = true: a harmless key is a secret key", k)
		}
	}
}

// TestSecretKeyPatternRule pins the rule written on DefaultSecretKeys:
// keys and patterns read as lower-cased words, split at non-alphanumerics
// and camelCase boundaries; plain patterns match anywhere in the
// concatenated words, '$' patterns the key's last words.
func TestSecretKeyPatternRule(t *testing.T) {
	base := newMasker(t, tproxy.Secrets{})
	for _, tt := range loadSecretKeyCases(t).Patterns {
		if base.SecretKey(tt.Key) {
			t.Fatalf("key %q: the default patterns match it, so it cannot test pattern %q", tt.Key, tt.Pattern)
		}
		m := newMasker(t, tproxy.Secrets{Keys: []string{tt.Pattern}})
		if got := m.SecretKey(tt.Key); got != tt.Match {
			t.Errorf("pattern %q, key %q: matched = %v, want %v", tt.Pattern, tt.Key, got, tt.Match)
		}
	}
}

func TestSecretKeyDoesNotAllocate(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{Keys: []string{"vault_ref$"}})
	keys := []string{"table", "duration_ms", "X-Api-Key", "DBPassword", "session_id", "basicAuth"}
	if n := testing.AllocsPerRun(100, func() {
		for _, k := range keys {
			m.SecretKey(k)
		}
	}); n != 0 {
		t.Errorf("SecretKey allocates %v times per run; it runs for every data key of every event", n)
	}
}

// TestDefaultSecretKeysAreEverywhereTheSame: docs/protocol.md section 11
// and the Python worker list the same default patterns as
// DefaultSecretKeys, in the same order.
func TestDefaultSecretKeysAreEverywhereTheSame(t *testing.T) {
	quoted := regexp.MustCompile("[`\"]([a-z$]+)[`\"]")
	find := func(file, from, to string) []string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		i := strings.Index(s, from)
		if i < 0 {
			t.Fatalf("%s: no %q", file, from)
		}
		s = s[i+len(from):]
		s = s[:strings.Index(s, to)]
		var out []string
		for _, m := range quoted.FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		return out
	}
	for _, place := range []struct{ file, from, to string }{
		{filepath.Join("..", "..", "docs", "protocol.md"), "The default patterns are:", "Every value"},
		{filepath.Join("..", "..", "workers", "python", "tproxy_worker.py"), "DEFAULT_SECRET_KEYS = (", ")"},
	} {
		if d := cmp.Diff(tproxy.DefaultSecretKeys, find(place.file, place.from, place.to)); d != "" {
			t.Errorf("%s lists other default secret key patterns (-DefaultSecretKeys +there):\n%s", place.file, d)
		}
	}
}
