package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
)

// TestListArtifactsKeepsHostLimits: with prepare's artifact_limits, a
// listing holds at most max_files files (cleaned_config.json always among
// them) and one refusal counts the rest; a file over max_file_bytes is
// refused without being read (a 4 GiB sparse file cost 13 s to hash), and
// cleaned_config.json is taken up to 1 MiB whatever max_file_bytes.
func TestListArtifactsKeepsHostLimits(t *testing.T) {
	type refusal struct{ path, reason string }
	tests := []struct {
		name        string
		lim         tproxy.ArtifactLimits
		files       map[string]int64 // path → size; sparse, never written
		wantListed  []string
		wantRefused []refusal
	}{
		{"no limits", tproxy.ArtifactLimits{},
			map[string]int64{"a": 1, "b/c": 2, CleanedConfigFile: 3},
			[]string{"a", "b/c", CleanedConfigFile}, nil},
		{"max files, cleaned config among them", tproxy.ArtifactLimits{MaxFiles: 3},
			map[string]int64{"a": 1, "b": 1, "c": 1, "d/e": 1, "z": 1, CleanedConfigFile: 1},
			[]string{"a", "b", CleanedConfigFile},
			[]refusal{{".", "3 more files were left out of the listing: the host takes at most 3 files per step"}}},
		{"max files, no cleaned config", tproxy.ArtifactLimits{MaxFiles: 2},
			map[string]int64{"a": 1, "b": 1, "c": 1},
			[]string{"a", "b"},
			[]refusal{{".", "1 more files were left out"}}},
		{"max file bytes: a 4 GiB sparse file is not hashed", tproxy.ArtifactLimits{MaxFileBytes: 1 << 20},
			map[string]int64{"huge.bin": 4 << 30, "small": 10},
			[]string{"small"},
			[]refusal{{"huge.bin", "4294967296 bytes is over the host's cap of 1048576 bytes per file"}}},
		{"cleaned config over max file bytes, under 1 MiB", tproxy.ArtifactLimits{MaxFileBytes: 10},
			map[string]int64{CleanedConfigFile: 1000},
			[]string{CleanedConfigFile}, nil},
		{"cleaned config over 1 MiB", tproxy.ArtifactLimits{MaxFileBytes: 10},
			map[string]int64{CleanedConfigFile: 2 << 20},
			nil,
			[]refusal{{CleanedConfigFile, "2097152 bytes is over the host's cap of 1048576"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, size := range tt.files {
				name := filepath.Join(dir, filepath.FromSlash(p))
				if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(name, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(name, size); err != nil {
					t.Fatal(err)
				}
			}
			var refused []refusal
			arts, err := listArtifacts(dir, tt.lim, func(p, r string, _ int64) { refused = append(refused, refusal{p, r}) })
			if err != nil {
				t.Fatal(err)
			}
			var listed []string
			for _, a := range arts {
				listed = append(listed, a.Path)
			}
			if d := cmp.Diff(tt.wantListed, listed); d != "" {
				t.Errorf("listed (-want +got):\n%s", d)
			}
			if len(refused) != len(tt.wantRefused) {
				t.Fatalf("refused %v, want %v", refused, tt.wantRefused)
			}
			for i, r := range refused {
				if r.path != tt.wantRefused[i].path || !strings.HasPrefix(r.reason, tt.wantRefused[i].reason) {
					t.Errorf("refusal %d: %v, want %v", i, r, tt.wantRefused[i])
				}
			}
		})
	}
}

// TestListArtifactsCountsWithoutLooking: the files past max_files are
// counted, not opened: one left out unreadable does not fail the listing.
func TestListArtifactsCountsWithoutLooking(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte("x"), 0o644)
	}
	// A dangling symlink past the cap would be refused if looked at.
	os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "zz-link"))
	var reasons []string
	arts, err := listArtifacts(dir, tproxy.ArtifactLimits{MaxFiles: 2}, func(_, r string, _ int64) { reasons = append(reasons, r) })
	if err != nil || len(arts) != 2 {
		t.Fatalf("%d listed, %v", len(arts), err)
	}
	if len(reasons) != 1 || !strings.HasPrefix(reasons[0], "4 more files were left out") {
		t.Errorf("refusals %q", reasons)
	}
}
