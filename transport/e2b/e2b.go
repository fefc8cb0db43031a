package e2b

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tproxy/tproxy/transport"
)

// DefaultTemplate and DefaultTimeout are what an E2B with an empty
// Template or a zero Timeout uses, as the official SDKs do.
const (
	DefaultTemplate = "base"
	DefaultTimeout  = 5 * time.Minute
)

// TagKey and TagValue make the metadata tag every sandbox this package
// creates carries, so that List and Sweep find the ones a crashed host
// left behind.
const (
	TagKey   = "tproxy"
	TagValue = "worker"
)

const (
	defaultDomain            = "e2b.app"
	defaultRemotePath        = "/home/user/.tproxy/worker"
	defaultUser              = "user"
	defaultKeepaliveInterval = 50 * time.Second
	// envdPort is the port of the daemon inside every sandbox.
	envdPort = 49983
)

const (
	defaultCleanupGrace = 2 * time.Second
	defaultKillTimeout  = 5 * time.Second
	defaultMaxRetries   = 3
	defaultBackoff      = 250 * time.Millisecond
	userAgent           = "tproxy-e2b/1"
)

// ErrNoAPIKey is returned by Start, List and Sweep when neither E2B.APIKey
// nor the E2B_API_KEY environment variable is set.
var ErrNoAPIKey = errors.New("e2b: no API key: set the E2B_API_KEY environment variable or E2B.APIKey")

// ErrEnvdTooOld is matched by errors.Is when Start refuses a sandbox whose
// daemon is older than the features the transport uses; the error names
// the template and the minimum version.
var ErrEnvdTooOld = errors.New("e2b: the sandbox's envd is too old")

// E2B is a [transport.Transport] that runs the worker in a new E2B sandbox.
//
// Start creates the sandbox through the control plane, uploads Binary
// (unless a file with the same sha256 is already executable at
// RemotePath, or WorkerPath names a worker baked into the template),
// starts it through envd's process service with stdin enabled, and
// returns its [transport.Process] ([InfoOf] describes its sandbox). Close
// ends the worker with the same ladder as [transport.Subprocess] (stop
// reading stdout, close stdin, wait, SIGTERM, wait, SIGKILL) and then
// kills the sandbox.
//
// The zero value needs only Binary and an API key in the environment. An
// E2B may start any number of workers and be used from several goroutines;
// do not change its fields while it is in use.
type E2B struct {
	// APIKey authenticates to the control plane. Empty means the
	// E2B_API_KEY environment variable. It is sent only to APIURL, never
	// into the sandbox, and is masked in errors.
	APIKey string
	// Domain is E2B's domain. Empty means E2B_DOMAIN, else "e2b.app".
	Domain string
	// APIURL is the control plane's base URL. Empty means E2B_API_URL, else
	// https://api.<Domain>.
	APIURL string
	// EnvdURL, if set, is the base URL of every call to a sandbox's daemon;
	// the sandbox is then chosen by the E2b-Sandbox-Id and E2b-Sandbox-Port
	// headers, as the SDKs do with https://sandbox.<domain>. Empty means
	// the per-sandbox host https://49983-<sandboxID>.<domain>.
	EnvdURL string

	// Template is the sandbox template. Empty means "base".
	Template string
	// Timeout is the sandbox's lifetime, refreshed every RefreshInterval
	// while the worker runs, so a session may outlive it. It is sent in
	// whole seconds (at least 1). Zero means 5 minutes.
	Timeout time.Duration
	// RefreshInterval is how often the sandbox's timeout is set again to
	// Timeout from now. Zero means Timeout/3.
	RefreshInterval time.Duration
	// Metadata tags the sandbox, in addition to TagKey=TagValue; put a
	// session id here to find the sandbox again with List or Sweep.
	Metadata map[string]string

	// Binary is the local path of the worker: a linux/amd64 executable
	// (see WorkerBinary). It is uploaded to RemotePath unless the same
	// file is already there. Binary or WorkerPath is required.
	Binary string
	// RemotePath is where Binary is stored in the sandbox. Empty means
	// /home/user/.tproxy/worker.
	RemotePath string
	// WorkerPath, instead of Binary, is the path of a worker executable
	// baked into the template (see docs/e2b.md): Start checks that it is
	// there and executable, with one call to envd's filesystem service,
	// and uploads nothing.
	WorkerPath string
	// Files are put into the sandbox before the worker starts, for steps
	// to read: each maps a path relative to FilesDir (no "..", no
	// absolute path) to a local file or directory, copied whole. Every
	// file's size and sha256 are checked in the sandbox after the upload.
	Files map[string]string
	// FilesDir is the sandbox directory Files are confined to. Empty
	// means /home/user/inputs.
	FilesDir string
	// Args are the worker's arguments.
	Args []string
	// Env is the worker's environment, given explicitly. It is sent with
	// the worker's Start call (not as the sandbox-wide envVars, which every
	// process in the sandbox would see). Nothing else from the host reaches
	// the sandbox except the variables named in ForwardEnv.
	Env map[string]string
	// ForwardEnv names host environment variables to copy to the worker,
	// by exact name (an allow-list; unset ones are skipped). Naming
	// E2B_API_KEY, or any value equal to the API key, makes Start fail.
	ForwardEnv []string
	// User is the sandbox OS user the worker runs as and owns the upload.
	// Empty means "user". envd refuses a user the sandbox does not have,
	// and Start's error then names it.
	User string

	// Stderr, if not nil, receives the worker's stderr as it arrives.
	Stderr io.Writer
	// Logger, if not nil, receives the worker's stderr line by line, like
	// [transport.Subprocess.Logger], plus warnings about failed timeout
	// refreshes.
	Logger *slog.Logger
	// TailSize is how much stderr StderrTail keeps. Zero means 16 KiB.
	TailSize int

	// CloseTimeout is how long Close waits after closing stdin before it
	// sends SIGTERM; zero means 5s. TermTimeout is how long it then waits
	// before SIGKILL; zero means 3s. KillTimeout is how long it waits for
	// the end event after SIGKILL before it drops the stream; zero means
	// 5s.
	CloseTimeout, TermTimeout, KillTimeout time.Duration
	// CleanupGrace bounds the cleanup of a Start (or NewPool) that fails
	// or whose context ends once it has a sandbox: the sandbox's kill may
	// go on at most CleanupGrace past the end of Start's context (and 30s
	// in all, for a context that never ends), so Start returns by then.
	// NewPool gives a sandbox creation under way the same grace. Zero means
	// 2s; negative means none. A sandbox whose kill does not finish in time
	// expires by its Timeout, no longer refreshed, and carries the tags
	// Sweep looks for; a Pool's Start leaves such a kill running in the
	// background, and Pool.Close waits for it.
	CleanupGrace time.Duration
	// KeepaliveInterval is how often envd is asked to send keepalive
	// events on the output stream, and how often the input stream sends
	// its own, so idle connections are not dropped by proxies. It is sent
	// in whole seconds. Zero means 50s.
	KeepaliveInterval time.Duration
	// Gzip asks envd to compress the output stream. Off by default: on a
	// fast link compression costs more than it saves.
	Gzip bool
	// JSON makes the calls to envd use the Connect protocol's JSON codec,
	// as the official SDKs do, instead of the proto codec: the proto
	// codec costs less per message and carries stdout without base64.
	JSON bool

	// HTTPClient makes every call. Nil means a client speaking HTTP/1.1
	// only (envd serves no h2c), without gzip, and without a Timeout: a
	// client timeout would cut the long-lived process stream; contexts
	// bound every call instead. Its CheckRedirect is not used: no redirect
	// is followed, so that the API key never leaves the API host; a 3xx
	// answer fails the call with an *APIError naming its Location.
	HTTPClient *http.Client
	// MaxRetries is how often an idempotent call (everything but creating
	// a sandbox, starting a process and sending input) is retried on 429,
	// on 502, 503 or 504 unless the sandbox is gone, or on a reset
	// connection, with exponential backoff from RetryBackoff. Other
	// statuses, a 500 included, are permanent. Zero means 3; negative
	// means none. RetryBackoff zero means 250ms.
	MaxRetries   int
	RetryBackoff time.Duration
}

var _ transport.Transport = (*E2B)(nil)

// client is an E2B's resolved configuration.
type client struct {
	t       *E2B
	apiKey  string
	apiURL  string
	domain  string
	http    *http.Client
	retry   retrier
	secrets secrets
}

// defaultHTTPClient speaks HTTP/1.1 only and never times out by itself.
var defaultHTTPClient = func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.ForceAttemptHTTP2 = false
	tr.DisableCompression = true
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr}
}()

func (t *E2B) client() (*client, error) {
	key := t.APIKey
	if key == "" {
		key = os.Getenv("E2B_API_KEY")
	}
	if key == "" {
		return nil, ErrNoAPIKey
	}
	c := &client{t: t, apiKey: key, secrets: secrets{key}}
	c.domain = firstNonEmpty(t.Domain, os.Getenv("E2B_DOMAIN"), defaultDomain)
	c.apiURL = strings.TrimSuffix(firstNonEmpty(t.APIURL, os.Getenv("E2B_API_URL"), "https://api."+c.domain), "/")
	base := t.HTTPClient
	if base == nil {
		base = defaultHTTPClient
	}
	hc := *base // the caller's client is not changed
	hc.CheckRedirect = noRedirects
	c.http = &hc
	c.retry = retrier{max: t.MaxRetries, base: t.RetryBackoff}
	if c.retry.max == 0 {
		c.retry.max = defaultMaxRetries
	}
	if c.retry.max < 0 {
		c.retry.max = 0
	}
	if c.retry.base <= 0 {
		c.retry.base = defaultBackoff
	}
	return c, nil
}

// noRedirects stops the client at a redirect, which then fails the call
// as an *APIError. Go's client copies a request's headers to the
// redirect's target, X-API-Key and X-Access-Token included (it drops only
// Authorization and cookies, and only for another domain), so following
// one could send the key anywhere; E2B's API does not redirect.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (t *E2B) timeoutSeconds() int {
	d := t.Timeout
	if d <= 0 {
		d = DefaultTimeout
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// workerEnv builds the worker's environment from the allow-list.
func (c *client) workerEnv() (map[string]string, error) {
	env := maps.Clone(c.t.Env)
	if env == nil {
		env = map[string]string{}
	}
	for _, name := range c.t.ForwardEnv {
		if name == "E2B_API_KEY" {
			return nil, errors.New("e2b: ForwardEnv names E2B_API_KEY; the API key never goes into the sandbox")
		}
		if v, ok := os.LookupEnv(name); ok {
			env[name] = v
		}
	}
	for name, v := range env {
		if v == c.apiKey || (len(c.apiKey) >= 8 && strings.Contains(v, c.apiKey)) {
			return nil, fmt.Errorf("e2b: the worker's environment variable %s holds the API key; the API key never goes into the sandbox", name)
		}
	}
	return env, nil
}

// Start creates a sandbox, puts the worker in it and starts it. ctx bounds
// the whole start (sandbox creation, upload, process start); the worker
// then lives until Process.Close. If the start fails after the sandbox was
// created, the sandbox is killed, and Start returns at most CleanupGrace
// after ctx ends. (A creation cut short by ctx may leave a sandbox whose
// id never arrived: it expires by Timeout, and Sweep finds it.)
func (t *E2B) Start(ctx context.Context) (transport.Process, error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	p, err := c.start(ctx)
	if err != nil {
		return nil, c.secrets.maskErr(err)
	}
	return p, nil
}

func (c *client) start(ctx context.Context) (*process, error) {
	w, err := c.worker()
	if err != nil {
		return nil, err
	}
	env, err := c.workerEnv()
	if err != nil {
		return nil, err
	}
	files, err := c.inputFiles()
	if err != nil {
		return nil, err
	}
	info := Info{Template: c.template()}
	t0 := time.Now()
	sb, err := c.create(ctx)
	if err != nil {
		return nil, err
	}
	info.Create = time.Since(t0)
	p, err := c.startWorker(ctx, sb, w, files, env, info)
	if err != nil {
		kctx, cancel := c.cleanupContext(ctx)
		defer cancel()
		if kerr := c.kill(kctx, sb.ID); kerr != nil {
			err = errors.Join(err, fmt.Errorf("e2b: and killing sandbox %s after the failed start failed too (it expires by its timeout; Sweep finds it): %w", sb.ID, kerr))
		}
		return nil, err
	}
	return p, nil
}

// workerSource is where the worker comes from: a local binary to upload
// (with its sha256 and size), or a path already in the template.
type workerSource struct {
	local, sum string
	size       int64
	remote     string // where it runs in the sandbox
	baked      bool   // remote is in the template; nothing is uploaded
}

// worker resolves Binary, RemotePath and WorkerPath.
func (c *client) worker() (workerSource, error) {
	t := c.t
	switch {
	case t.WorkerPath != "" && t.Binary != "":
		return workerSource{}, errors.New("e2b: E2B.Binary and E2B.WorkerPath are both set: WorkerPath names a worker already in the template, Binary one to upload")
	case t.WorkerPath != "":
		if !strings.HasPrefix(t.WorkerPath, "/") {
			return workerSource{}, fmt.Errorf("e2b: E2B.WorkerPath %q is not an absolute path", t.WorkerPath)
		}
		return workerSource{remote: t.WorkerPath, baked: true}, nil
	case t.Binary == "":
		return workerSource{}, errors.New("e2b: E2B.Binary (the worker executable) and E2B.WorkerPath are empty")
	}
	sum, size, err := fileSHA256(t.Binary)
	if err != nil {
		return workerSource{}, fmt.Errorf("e2b: worker binary: %w", err)
	}
	return workerSource{local: t.Binary, sum: sum, size: size, remote: firstNonEmpty(t.RemotePath, defaultRemotePath)}, nil
}

func (c *client) template() string { return firstNonEmpty(c.t.Template, DefaultTemplate) }

func (t *E2B) cleanupGrace() time.Duration {
	switch {
	case t.CleanupGrace == 0:
		return defaultCleanupGrace
	case t.CleanupGrace < 0:
		return 0
	}
	return t.CleanupGrace
}

// sandboxKillTimeout bounds a sandbox kill that no caller's context
// bounds: Process.Close's, a Pool's.
const sandboxKillTimeout = 30 * time.Second

// cleanupContext returns the context for the cleanup of a start whose
// context is ctx: it has ctx's values and ends CleanupGrace after ctx
// ends, or sandboxKillTimeout from now if that comes first. The cleanup
// is not cut short by ctx's end itself, which is often why it runs.
func (c *client) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return c.graceContext(ctx, sandboxKillTimeout)
}

// graceContext returns a context with ctx's values that ends CleanupGrace
// after ctx ends, or limit from now if that comes first.
func (c *client) graceContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	grace := c.t.cleanupGrace()
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	var (
		mu      sync.Mutex
		timer   *time.Timer
		stopped bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer = time.AfterFunc(grace, cancel)
		}
	})
	return kctx, func() {
		stop()
		mu.Lock()
		stopped = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// fileSHA256 returns the hex sha256 and the size of the file at path.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
