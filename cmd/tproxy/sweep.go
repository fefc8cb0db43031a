package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tproxy/tproxy/transport/e2b"
)

const sweepUsage = `usage: tproxy sweep [-older-than D] [-tag KEY=VALUE]... [-dry-run] [-e2b-api-url URL]

Kills the E2B sandboxes that tproxy started (the tag ` + e2b.TagKey + `=` + e2b.TagValue + `)
and that are older than -older-than: the orphans of hosts that died before
they could close their workers. -tag narrows the selection to sandboxes
that also carry each tag (e.g. a session id put in e2b.E2B.Metadata).
With -dry-run it lists them and kills nothing.

The API key is E2B_API_KEY; E2B_DOMAIN and E2B_API_URL choose another
deployment, as for the e2b transport. For a self-hosted E2B or a local
fake, -e2b-api-url sets the control plane's base URL, as it does for
tproxy run (default: E2B_API_URL, else https://api.e2b.app, or
api.$E2B_DOMAIN):

  tproxy sweep -dry-run -e2b-api-url http://localhost:3000

Exit status: 0 when every selected sandbox was killed (or listed), 1 when
the listing or a kill failed, 2 for a usage error (or no API key).

Flags:
`

// sweepCmd is "tproxy sweep".
func sweepCmd(ctx context.Context, args []string, e *env) int {
	fs := flagSet("sweep", sweepUsage, e)
	olderThan := fs.Duration("older-than", time.Hour, "kill sandboxes started longer ago than this; make it longer than any session")
	dryRun := fs.Bool("dry-run", false, "list the sandboxes that would be killed, and kill none")
	var tags multiFlag
	fs.Var(&tags, "tag", "`KEY=VALUE` a sandbox must also carry (repeatable)")
	apiURL := fs.String("e2b-api-url", "", "the control plane's base `URL`, for a self-hosted E2B or a local fake (empty: E2B_API_URL, else https://api.<E2B_DOMAIN or e2b.app>)")
	pos, _, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(fs, e, "unexpected arguments %q", pos)
	}
	if *olderThan < 0 {
		return usageError(fs, e, "-older-than must not be negative")
	}
	if *apiURL != "" && !isHTTPURL(*apiURL) {
		return usageError(fs, e, "-e2b-api-url %q: want an http:// or https:// URL", *apiURL)
	}
	// Always keep tproxy's own tag: a sweep must never reach sandboxes
	// some other program started, whatever -tag says.
	meta := map[string]string{e2b.TagKey: e2b.TagValue}
	for _, kv := range tags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageError(fs, e, "-tag %q: want KEY=VALUE", kv)
		}
		if k == e2b.TagKey && v != e2b.TagValue {
			return usageError(fs, e, "-tag %q: sweep only reaches sandboxes tproxy tagged %s=%s", kv, e2b.TagKey, e2b.TagValue)
		}
		meta[k] = v
	}
	opts := e2b.ListOptions{Metadata: meta, OlderThan: *olderThan}
	t := &e2b.E2B{APIURL: *apiURL}

	if !*dryRun {
		killed, err := t.Sweep(ctx, opts)
		if errors.Is(err, e2b.ErrNoAPIKey) {
			return usageError(fs, e, "%v", err)
		}
		for _, id := range killed {
			fmt.Fprintf(e.stdout, "killed %s\n", id)
		}
		fmt.Fprintf(e.stdout, "%d sandboxes older than %v killed\n", len(killed), *olderThan)
		if err != nil {
			fmt.Fprintf(e.stderr, "tproxy sweep: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	list, err := t.List(ctx, opts)
	if errors.Is(err, e2b.ErrNoAPIKey) {
		return usageError(fs, e, "%v", err)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "tproxy sweep: %v\n", err)
		return exitFail
	}
	now := time.Now()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX\tTEMPLATE\tSTATE\tAGE\tTAGS")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.TemplateID, s.State, now.Sub(s.StartedAt).Round(time.Second), tagString(s.Metadata))
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "%d sandboxes older than %v would be killed (dry run)\n", len(list), *olderThan)
	return exitOK
}

// tagString formats tags as sorted key=value pairs.
func tagString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
