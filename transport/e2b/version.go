package e2b

import (
	"fmt"
	"strconv"
	"strings"
)

// minEnvd is the oldest envd the transport works with, and why: the
// feature of the newest version it needs.
var minEnvd = struct {
	version [3]int
	text    string
	needs   string
}{[3]int{0, 5, 2}, "0.5.2", "CloseStdin, the worker's end of input"}

// parseVersion reads "0.6.13" (a leading "v" and a pre-release or build
// suffix are allowed).
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

// checkEnvd refuses a sandbox whose daemon is older than minEnvd. A
// version the control plane did not report, or one that does not parse,
// is let through: the calls themselves will say what is missing.
func (c *client) checkEnvd(sb *sandbox) error {
	v, ok := parseVersion(sb.EnvdVersion)
	if !ok {
		return nil
	}
	for i := range v {
		if v[i] != minEnvd.version[i] {
			if v[i] < minEnvd.version[i] {
				return fmt.Errorf("%w: template %q runs envd %s; the E2B transport needs envd %s or later (for %s): rebuild the template on a current E2B base image",
					ErrEnvdTooOld, firstNonEmpty(sb.TemplateID, c.template()), sb.EnvdVersion, minEnvd.text, minEnvd.needs)
			}
			return nil
		}
	}
	return nil
}
