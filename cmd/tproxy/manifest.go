package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/tproxy/tproxy"
)

// isYAML reports whether path names a YAML manifest; every other name is
// read as JSON.
func isYAML(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}

// isManifestFile reports whether a file in a directory of manifests is
// one: what run -parallel picks up.
func isManifestFile(name string) bool {
	return isYAML(name) || strings.EqualFold(filepath.Ext(name), ".json")
}

// loadManifest reads a manifest file, JSON or YAML (by its extension),
// and validates it. A YAML manifest is converted to JSON first, so both
// forms are decoded by one strict decoder, with the field names of
// tproxy.Manifest: a misspelt field ("need" for "needs") is an error
// rather than a step that silently runs too early.
func loadManifest(path string) (tproxy.Manifest, error) {
	var m tproxy.Manifest
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if isYAML(path) {
		// go-yaml rather than a hand-written reader: YAML's quoting,
		// anchors, block scalars and duplicate-key rules are where a
		// home-made parser goes wrong, and a manifest's config values
		// are arbitrary YAML.
		if b, err = yaml.YAMLToJSON(b); err != nil {
			return m, fmt.Errorf("%s: %w", path, err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("%s: data after the manifest", path)
	}
	// DisallowUnknownFields does not reach into types with their own
	// UnmarshalJSON (a step decoding its durations), so the manifest is
	// also encoded again and compared with what was read: a field that
	// did not survive the round trip is one the manifest types lack.
	if err := checkRoundTrip(b, m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// manifestDir lists the manifests in dir, sorted by name.
func manifestDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, e := range ents {
		if e.Type().IsRegular() && isManifestFile(e.Name()) {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s holds no manifest (*.json, *.yaml, *.yml)", dir)
	}
	slices.Sort(paths)
	return paths, nil
}

// checkRoundTrip reports the first field of the manifest JSON b that m,
// encoded again, does not hold.
func checkRoundTrip(b []byte, m tproxy.Manifest) error {
	var in, out any
	again, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if err := json.Unmarshal(again, &out); err != nil {
		return err
	}
	if p := lostField(in, out, ""); p != "" {
		return fmt.Errorf("unknown field %q", p)
	}
	return nil
}

// lostField returns the path of a non-empty field of in that out lacks;
// config and pipeline are the user's own and are not looked into.
// Empty values (null, "", 0, false, [], {}) may be dropped by omitempty
// and are not reported.
func lostField(in, out any, path string) string {
	switch iv := in.(type) {
	case map[string]any:
		ov, _ := out.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(iv)) {
			v := iv[k]
			o, ok := ov[k]
			switch {
			case !ok && !isEmpty(v):
				return strings.TrimPrefix(path+"."+k, ".")
			case !ok, k == "config", k == "pipeline":
			default:
				if p := lostField(v, o, path+"."+k); p != "" {
					return p
				}
			}
		}
	case []any:
		ov, _ := out.([]any)
		for i, v := range iv {
			if i < len(ov) {
				if p := lostField(v, ov[i], fmt.Sprintf("%s[%d]", path, i)); p != "" {
					return p
				}
			}
		}
	}
	return ""
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case float64:
		return x == 0
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}
