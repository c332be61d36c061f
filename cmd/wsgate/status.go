package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/status"
)

func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: the built-in defaults)")
	asJSON := fs.Bool("json", false, "print the report as JSON, for scripts")
	interval := fs.Duration("interval", time.Second, "pushes/s is the push count's increase over this `duration` between two samples; 0: one sample, pushes/s averaged since each sidecar started")
	timeout := fs.Duration("timeout", 2*time.Second, "how long each instance has to answer")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: wsgate status [-config FILE] [-json] [-interval D] [-timeout D]

Asks every instance for GET /status over its push socket (runtime_dir/push-<i>.sock;
with nginx.push_proxy = "none", its push port), all at once, and nginx for its
stub_status at push.listen[0]:push.port_base/nginx_status (served only with
nginx.push_proxy = "http").
Prints one row per instance (pid, uptime, connections, pushes/s, drops: pushes refused
with 503 since it started), the totals, and nginx's connection counts. An instance that
does not answer within -timeout is reported down and the exit status is 1.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: wsgate status [-config FILE] [-json]")
	}
	if *timeout <= 0 || *interval < 0 {
		return errors.New("wsgate status: -timeout must be positive (a dead instance would hang the query), -interval not negative")
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r := status.Query(ctx, &c, status.Options{Interval: *interval, Timeout: *timeout})
	if *asJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if _, err := os.Stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	} else if err := r.WriteTable(os.Stdout); err != nil {
		return err
	}
	if n := r.Down(); n > 0 {
		return fmt.Errorf("%d of %d instances down", n, r.Totals.Instances)
	}
	return nil
}
