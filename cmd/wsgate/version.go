package main

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X main.version=... -X main.commit=..." by the Makefile;
// otherwise taken from the build information Go records (stamped).
var (
	version = "dev"
	commit  = ""
)

func init() {
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, commit = stamped(bi, version, commit)
	}
}

// stamped fills in what -ldflags left unset from bi: the module version
// (`go install ...@v1.2.3`) and the VCS revision, marked "-dirty" when the
// tree had changes (`go build` in a checkout).
func stamped(bi *debug.BuildInfo, version, commit string) (string, string) {
	if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	if commit == "" {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && modified == "true" {
			rev += "-dirty"
		}
		commit = rev
	}
	return version, commit
}

func runVersion(args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: wsgate version")
	}
	c := commit
	if c == "" {
		c = "unknown"
	}
	fmt.Printf("wsgate %s (%s, commit %s)\n", version, runtime.Version(), c)
	return nil
}
