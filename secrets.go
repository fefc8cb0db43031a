package tproxy

// Masked is what a secret is replaced by wherever it would leave the worker
// or reach a file.
const Masked = "***MASKED***"

// DefaultSecretKeys are the config key patterns whose values are secrets.
//
// A key and a pattern are both read as words: they are split at every byte
// that is not an ASCII letter or digit, and inside a run of letters and
// digits before an upper-case letter that follows a lower-case letter or a
// digit ("apiKey": api, key) and before an upper-case letter that starts a
// capitalized word after other upper-case letters ("APIKey": api, key;
// "DBPassword": db, password); the words are lower-cased. A pattern
// matches a key when
//   - its words, concatenated, occur anywhere in the key's words
//     concatenated: "apikey" matches "apiKey", "X-API-KEY" and
//     "my_apikey_2"; "password" matches "DB_Password" and "dbpassword";
//   - for a pattern ending in '$', its words, concatenated, equal the
//     key's last words concatenated: "auth$" matches "auth", "basic_auth"
//     and "proxyAuth", but not "author", "authority", "oauth" or
//     "auth_type"; "session$" matches "user_session" but not "session_id".
//
// The '$' patterns are the short names that, matched anywhere, would flag
// harmless keys (a key's last word says what its value is: "auth_url" is
// a URL, "session_id" an id, "signature_version" a version). Everything
// else matches anywhere, preferring a masked harmless value to a leaked
// secret: "tokenizer" and "max_tokens" match "token". Secrets.Keys takes
// patterns of both kinds.
var DefaultSecretKeys = []string{
	"password", "passwd", "passphrase", "passcode", "pwd",
	"secret", "token", "credential", "bearer", "jwt", "cookie", "dsn",
	"authorization", "authheader", "authkey",
	"apikey", "accesskey", "privatekey", "privkey", "sshkey", "signingkey",
	"encryptionkey", "masterkey", "sessionkey", "accountkey", "licensekey", "clientkey",
	"connectionstring", "connstr",
	"auth$", "pass$", "creds$", "session$", "signature$", "sig$", "pin$", "otp$",
}

// MinSecretLen is the shortest secret value that is also masked inside
// free text (event data, log messages, error messages, stderr). A shorter
// value is masked where it stands as a config value, but replacing every
// "42" in every message would destroy the output without protecting much.
const MinSecretLen = 4

// Secrets says which config values are secret. The zero value uses
// DefaultSecretKeys only.
type Secrets struct {
	// Keys are key patterns matched like DefaultSecretKeys, in addition
	// to them.
	Keys []string `json:"keys,omitempty"`
	// Pointers are RFC 6901 JSON pointers, such as "/connection/dsn",
	// into every step's config and into the session config. The values
	// they point at are secret whatever their keys.
	Pointers []string `json:"pointers,omitempty"`
}
