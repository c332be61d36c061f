package main

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X main.version=... -X main.commit=..." by the Makefile.
var (
	version = "dev"
	commit  = ""
)

func runVersion(args []string) error {
	if err := flag.NewFlagSet("version", flag.ContinueOnError).Parse(args); err != nil {
		return err
	}
	c := commit
	if c == "" {
		c = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	fmt.Printf("wsgate %s (%s, commit %s)\n", version, runtime.Version(), c)
	return nil
}
