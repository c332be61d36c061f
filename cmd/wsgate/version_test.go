package main

import (
	"runtime/debug"
	"testing"
)

// What -ldflags left unset comes from Go's build information: a module
// version from `go install ...@v`, a revision marked -dirty from `go build`
// in a changed checkout; what -ldflags set stays.
func TestStamped(t *testing.T) {
	info := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		name                    string
		bi                      *debug.BuildInfo
		version, commit         string
		wantVersion, wantCommit string
	}{
		{"go install @v", info("v1.2.3"), "dev", "", "v1.2.3", ""},
		{"go build, clean", info("(devel)", "vcs.revision", "abc", "vcs.modified", "false"), "dev", "", "dev", "abc"},
		{"go build, changed", info("(devel)", "vcs.revision", "abc", "vcs.modified", "true"), "dev", "", "dev", "abc-dirty"},
		{"make", info("(devel)", "vcs.revision", "abc", "vcs.modified", "true"), "5b819a2", "5b819a2ffff", "5b819a2", "5b819a2ffff"},
		{"no VCS", info("(devel)"), "dev", "", "dev", ""},
	} {
		v, c := stamped(tc.bi, tc.version, tc.commit)
		if v != tc.wantVersion || c != tc.wantCommit {
			t.Errorf("%s: %q %q, want %q %q", tc.name, v, c, tc.wantVersion, tc.wantCommit)
		}
	}
}
