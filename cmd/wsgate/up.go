package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/up"
)

func runUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: built-in, 2 sidecars, clients on 127.0.0.1:8080)")
	state := fs.String("state", "", "state `dir` for rendered configs, nginx logs and, without -config, the sockets (default: a new temp dir, removed at exit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	stateDir := *state
	if stateDir == "" {
		d, err := os.MkdirTemp("", "wsgate-up-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		stateDir = d
	}
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	cfg := up.Defaults(stateDir)
	if *cfgPath != "" {
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, _ := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return up.Run(ctx, &cfg, up.Options{
		Binary:   self,
		StateDir: stateDir,
		Out:      os.Stdout,
		Log:      log.With("component", "up"),
	})
}
