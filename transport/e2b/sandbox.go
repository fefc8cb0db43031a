package e2b

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sandbox is a created sandbox, as the control plane described it.
type sandbox struct {
	ID          string  `json:"sandboxID"`
	TemplateID  string  `json:"templateID"`
	EnvdVersion string  `json:"envdVersion"`
	AccessToken *string `json:"envdAccessToken"`
	Domain      *string `json:"domain"`

	created time.Time // when the control plane answered the creation
}

// create is POST /sandboxes. It is never retried: a retry after a lost
// answer could create a second sandbox nobody kills.
func (c *client) create(ctx context.Context) (*sandbox, error) {
	meta := maps.Clone(c.t.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[TagKey] = TagValue
	body := map[string]any{
		"templateID": c.template(),
		"timeout":    c.t.timeoutSeconds(),
		"metadata":   meta,
		"secure":     true,
	}
	resp, err := c.do(ctx, request{op: "create sandbox", method: http.MethodPost, url: c.apiURL + "/sandboxes",
		header: c.apiHeader(), body: jsonBody(body)})
	if err != nil {
		return nil, err
	}
	var sb sandbox
	if err := decodeJSON("create sandbox", resp, &sb); err != nil {
		return nil, err
	}
	sb.created = time.Now()
	if sb.ID == "" {
		return nil, errors.New("e2b: create sandbox: the answer has no sandboxID")
	}
	// The id, token and domain are sent on to envd's host (and the domain
	// to DNS): a control plane that put the key there would make it leave.
	if len(c.apiKey) >= minPiece && (strings.Contains(sb.ID, c.apiKey) ||
		sb.AccessToken != nil && strings.Contains(*sb.AccessToken, c.apiKey) ||
		sb.Domain != nil && strings.Contains(*sb.Domain, c.apiKey)) {
		return nil, errors.New("e2b: create sandbox: the answer holds the API key in the sandbox's id, access token or domain; refusing to send it on")
	}
	return &sb, nil
}

func (c *client) apiHeader() http.Header {
	return http.Header{"X-Api-Key": {c.apiKey}, "Accept": {"application/json"}}
}

// kill is DELETE /sandboxes/{id}; a sandbox already gone (404) is killed.
func (c *client) kill(ctx context.Context, id string) error {
	resp, err := c.do(ctx, request{op: "kill sandbox " + id, method: http.MethodDelete,
		url: c.apiURL + "/sandboxes/" + url.PathEscape(id), header: c.apiHeader(), idempotent: true})
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// setTimeout is POST /sandboxes/{id}/timeout: the sandbox now expires in
// seconds from now. Setting it again is harmless, so it is retried.
func (c *client) setTimeout(ctx context.Context, id string, seconds int) error {
	resp, err := c.do(ctx, request{op: "refresh sandbox timeout", method: http.MethodPost,
		url:    c.apiURL + "/sandboxes/" + url.PathEscape(id) + "/timeout",
		header: c.apiHeader(), body: jsonBody(map[string]int{"timeout": seconds}), idempotent: true})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// exists asks the control plane once whether the sandbox still runs (GET
// /sandboxes/{id}); it is used to explain a lost stream, quickly, so it is
// not retried.
func (c *client) exists(ctx context.Context, id string) (bool, error) {
	resp, err := c.do(ctx, request{op: "get sandbox " + id, method: http.MethodGet,
		url: c.apiURL + "/sandboxes/" + url.PathEscape(id), header: c.apiHeader()})
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	drain(resp)
	return true, nil
}

// Sandbox describes a sandbox as List reports it.
type Sandbox struct {
	// ID is the sandbox id.
	ID string `json:"sandboxID"`
	// TemplateID is the template it was created from.
	TemplateID string `json:"templateID"`
	// StartedAt is when it was created; EndAt when it will expire.
	StartedAt time.Time `json:"startedAt"`
	EndAt     time.Time `json:"endAt"`
	// Metadata are its tags.
	Metadata map[string]string `json:"metadata"`
	// State is "running" or "paused".
	State string `json:"state"`
	// EnvdVersion is the version of the sandbox's daemon.
	EnvdVersion string `json:"envdVersion"`
}

// ListOptions select sandboxes.
type ListOptions struct {
	// Metadata keeps sandboxes carrying all these tags. Nil means
	// TagKey=TagValue (every sandbox this package started); an empty,
	// non-nil map selects every sandbox of the team.
	Metadata map[string]string
	// OlderThan keeps sandboxes started more than this long ago.
	OlderThan time.Duration
}

// listPage is how many sandboxes one List request asks for.
const listPage = 100

// List returns the team's running and paused sandboxes that match opts,
// oldest first (GET /v2/sandboxes, following X-Next-Token).
func (t *E2B) List(ctx context.Context, opts ListOptions) (_ []Sandbox, err error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	defer func() { err = c.secrets.maskErr(err) }()
	meta := opts.Metadata
	if meta == nil {
		meta = map[string]string{TagKey: TagValue}
	}
	filter := metadataFilter(meta)
	var out []Sandbox
	next := ""
	for page := 0; ; page++ {
		q := url.Values{"state": {"running,paused"}, "limit": {strconv.Itoa(listPage)}}
		if filter != "" {
			q.Set("metadata", filter)
		}
		if next != "" {
			q.Set("nextToken", next)
		}
		resp, err := c.do(ctx, request{op: "list sandboxes", method: http.MethodGet,
			url: c.apiURL + "/v2/sandboxes?" + q.Encode(), header: c.apiHeader(), idempotent: true})
		if err != nil {
			return nil, err
		}
		next = resp.Header.Get("X-Next-Token")
		var items []Sandbox
		if err := decodeJSON("list sandboxes", resp, &items); err != nil {
			return nil, err
		}
		now := time.Now()
		for _, s := range items {
			// Filter here too: a server ignoring the filter must not make
			// Sweep kill someone else's sandbox.
			if !hasTags(s.Metadata, meta) {
				continue
			}
			if opts.OlderThan > 0 && now.Sub(s.StartedAt) <= opts.OlderThan {
				continue
			}
			out = append(out, s)
		}
		if next == "" || len(items) == 0 {
			break
		}
		if page > 10000 {
			return nil, fmt.Errorf("e2b: list sandboxes: more than %d pages", page)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, nil
}

// metadataFilter encodes a metadata filter for GET /v2/sandboxes. E2B's
// API unescapes the parameter once more than a query parameter is
// unescaped, then splits it at & and =, and unescapes each key and value
// again; so each key and value is escaped, the pairs joined, and the
// whole escaped once more here (q.Encode then adds the query's own
// escaping). A key or value holding &, =, %, + or a space then arrives
// whole. Keys are sorted, so the URL is the same every time.
func metadataFilter(meta map[string]string) string {
	if len(meta) == 0 {
		return ""
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = url.QueryEscape(k) + "=" + url.QueryEscape(meta[k])
	}
	return url.QueryEscape(strings.Join(pairs, "&"))
}

func hasTags(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Sweep kills the sandboxes List(opts) returns: orphans left behind by
// hosts that died before they could close their workers. With the zero
// ListOptions it kills every sandbox this package started, so give
// OlderThan a value longer than any session. It returns the ids it
// killed; it goes on after a failed kill and reports every failure.
func (t *E2B) Sweep(ctx context.Context, opts ListOptions) (_ []string, err error) {
	list, err := t.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	defer func() { err = c.secrets.maskErr(err) }()
	var killed []string
	var errs []error
	for _, s := range list {
		if err := c.kill(ctx, s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		killed = append(killed, s.ID)
	}
	return killed, errors.Join(errs...)
}
