package e2b_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tproxy/tproxy/transport/e2b"
)

// recordingServer answers 404 to everything and remembers the credential
// headers of every request it received.
type recordingServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newRecordingServer(t *testing.T) *recordingServer {
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.seen = append(rs.seen, r.Header.Clone())
		rs.mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) requests() []http.Header {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.seen
}

// redirector answers every request with a redirect to target+path.
func redirector(t *testing.T, status int, target func() string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/moved/") {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, target()+r.URL.RequestURI(), status)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestRedirectNeverCarriesKey: a control plane (or an envd) that answers
// with a redirect, to another host or to another path of its own, is not
// followed: the API key and the sandbox's access token never reach the
// redirect's target, and the call fails with an *APIError holding the
// redirect's status.
func TestRedirectNeverCarriesKey(t *testing.T) {
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, where := range []string{"other host", "same host"} {
			t.Run(http.StatusText(status)+"/"+where, func(t *testing.T) {
				other := newRecordingServer(t)
				var api *httptest.Server
				target := func() string {
					if where == "same host" {
						return api.URL + "/moved"
					}
					// Another host name, not only another port: Go's
					// client compares host names when it decides which
					// headers to drop.
					return strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
				}
				api = redirector(t, status, target)
				srv := newServer(t, fakeOptions())
				key := srv.APIKey()

				// The control plane redirects.
				tr := newE2B(t, srv, "worker")
				tr.APIURL = api.URL
				var errs []error
				_, err := tr.Start(t.Context())
				errs = append(errs, err)
				_, err = tr.List(t.Context(), e2b.ListOptions{})
				errs = append(errs, err)
				_, err = tr.Sweep(t.Context(), e2b.ListOptions{})
				errs = append(errs, err)
				// envd redirects: the sandbox is real, its daemon's
				// address is the redirector.
				tr = newE2B(t, srv, "worker")
				tr.EnvdURL = api.URL
				_, err = tr.Start(t.Context())
				errs = append(errs, err)

				for i, err := range errs {
					var ae *e2b.APIError
					if !errors.As(err, &ae) || ae.Status != status {
						t.Errorf("call %d: err = %v, want an *e2b.APIError with status %d", i, err, status)
						continue
					}
					if !strings.Contains(err.Error(), "redirect") {
						t.Errorf("call %d: %q does not say it refused a redirect", i, err)
					}
					if strings.Contains(err.Error(), key) {
						t.Errorf("call %d: %q quotes the key", i, err)
					}
				}
				seen := other.requests()
				for _, h := range seen {
					if h.Get("X-Api-Key") != "" || h.Get("X-Access-Token") != "" {
						t.Errorf("the redirect's target received a credential: %v", h)
					}
				}
				if where == "other host" && len(seen) != 0 {
					t.Errorf("the redirect's target received %d requests; none may follow a redirect", len(seen))
				}
				if ids := srv.Sandboxes(); len(ids) != 0 {
					t.Errorf("sandboxes left: %v", ids)
				}
			})
		}
	}
}

// TestCreateAnswerHoldingKeyRefused: a control plane that answers a
// creation with the API key as the sandbox's id, access token or domain
// (all sent on to envd's host) is refused before anything is sent there,
// and the error does not quote the key.
func TestCreateAnswerHoldingKeyRefused(t *testing.T) {
	const key = "e2b_0123456789abcdef0123456789abcdef"
	for _, answer := range []string{
		`{"sandboxID":"` + key + `","envdAccessToken":"tok"}`,
		`{"sandboxID":"i123","envdAccessToken":"` + key + `"}`,
		`{"sandboxID":"i123","domain":"` + key + `.example"}`,
	} {
		envd := newRecordingServer(t)
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/sandboxes" {
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte(answer))
				return
			}
			w.WriteHeader(http.StatusNoContent) // the kill
		}))
		t.Cleanup(api.Close)
		tr := &e2b.E2B{APIKey: key, APIURL: api.URL, EnvdURL: envd.URL, Binary: exe(t), MaxRetries: -1}
		_, err := tr.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "holds the API key") {
			t.Errorf("answer %s: err = %v, want a refusal", answer, err)
		}
		if err != nil && strings.Contains(err.Error(), key[4:9]) {
			t.Errorf("answer %s: %q quotes the key", answer, err)
		}
		if n := len(envd.requests()); n != 0 {
			t.Errorf("answer %s: envd received %d requests", answer, n)
		}
	}
}
