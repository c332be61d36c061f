// Command wsgate is the WebSocket push gateway for nginx: the sidecar
// (`serve`), the nginx configuration generator (`nginx`, `check`) and the
// local all-in-one gateway (`up`). Each subcommand lives in its own file and
// only wires flags to the packages that do the work.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
)

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{
	"client":  {"connect a WebSocket client and print what it receives (for trying things out)", runClient},
	"up":      {"run nginx and the sidecars: the local all-in-one gateway", runUp},
	"check":   {"validate the TOML and test the generated nginx config with nginx -t", runCheck},
	"nginx":   {"print the nginx config generated from the TOML", runNginx},
	"serve":   {"run one sidecar instance (as systemd runs it)", runServe},
	"status":  {"show every instance's connections, pushes/s and drops, and nginx's counters", runStatus},
	"systemd": {"write the systemd unit drop-ins the TOML needs (make install runs it)", runSystemd},
	"version": {"print version, Go version and commit", runVersion},
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "-help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "wsgate: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "wsgate %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: wsgate <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'wsgate <command> -h' for a command's flags.")
}
