package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/sidecar"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (required)")
	instance := fs.Int("instance", 0, "instance `id`, 1..instances")
	level := fs.String("log-level", "", "override log.level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: wsgate serve -config FILE -instance I")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *instance < 1 || *instance > cfg.Instances {
		return fmt.Errorf("-instance %d is out of range 1..%d (instances in %s)", *instance, cfg.Instances, *cfgPath)
	}
	if *level != "" {
		cfg.Log.Level = *level
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("-log-level: %w", err)
		}
	}
	log, levelVar := newLogger(cfg.Log)

	ws, push, activated, err := sidecar.Listeners(&cfg, *instance)
	if err != nil {
		return err
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(threads(runtime.GOMAXPROCS(0), cfg.Instances))
	}
	log.Info("starting", "instance", *instance, "version", version, "activated", activated, "pid", os.Getpid(),
		"gomaxprocs", runtime.GOMAXPROCS(0))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go toggleDebugOnSIGUSR1(ctx, log.With("instance", *instance), levelVar)
	go func() {
		<-ctx.Done()
		daemon.SdNotify(false, daemon.SdNotifyStopping)
	}()
	// The listeners already queue connections, so the service is ready.
	daemon.SdNotify(false, daemon.SdNotifyReady)
	return sidecar.New(&cfg, *instance, log, sidecar.WithVersion(version)).Serve(ctx, ws, push...)
}

// threads is how many threads (GOMAXPROCS) each of instances sidecars
// gets when the machine (or its CPU quota) allows procs: an equal share,
// at least one. The sidecars split the cores as nginx's workers do; on 2
// cores, 2 sidecars of 1 thread each used 10-15% less CPU per push and
// per handshake than 2 of 2 in make bench (less scheduler and sysmon
// work). GOMAXPROCS in the environment overrides it.
func threads(procs, instances int) int {
	return max(1, procs/instances)
}

// newLogger returns the slog logger log.format and log.level ask for, on
// stderr, and the variable holding its level.
func newLogger(c config.Log) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	_ = lv.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), lv
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), lv
}

// toggleDebugOnSIGUSR1 switches between the configured level and debug on
// each SIGUSR1.
func toggleDebugOnSIGUSR1(ctx context.Context, log *slog.Logger, lv *slog.LevelVar) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	configured := lv.Level()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			if lv.Level() == slog.LevelDebug {
				lv.Set(configured)
			} else {
				lv.Set(slog.LevelDebug)
			}
			log.Info("log level changed", "log_level", lv.Level().String())
		}
	}
}
