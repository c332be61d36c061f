package up

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/wstest"
)

// A SIGHUP that arrives while up is still starting (nginx started but not
// yet listening) must not kill up: it has to be handled like the one that
// arrives later, and up must still stop cleanly on SIGTERM.
func TestSIGHUPDuringStartup(t *testing.T) {
	if dir := os.Getenv("WSGATE_UP_HUP_HELPER"); dir != "" {
		c := Defaults(dir)
		c.Instances = 1
		c.Listen = []string{"127.0.0.1:1"} // nothing ever listens: up stays in waitListening
		c.Nginx.Binary = filepath.Join(dir, "fake-nginx")
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err := Run(ctx, &c, Options{Binary: filepath.Join(dir, "fake-sidecar"), StateDir: dir,
			Out: os.Stdout, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "nginx-started")
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("fake-nginx", `[ "$1" = -t ] && exit 0; touch `+marker+`; exec sleep 60`+"\n")
	write("fake-sidecar", "exec sleep 60\n")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGHUPDuringStartup$")
	cmd.Env = append(os.Environ(), "WSGATE_UP_HUP_HELPER="+dir)
	var stdout wstest.Output
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("fake nginx never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("up was killed by %v during startup", ws.Signal())
			}
		}
		t.Fatalf("up exited on SIGHUP during startup: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up did not stop cleanly on SIGTERM: %v", err)
		}
		if strings.Contains(stdout.String(), "wsgate is up") {
			t.Errorf("up, stopped before nginx listened, printed its banner:\n%s", stdout.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("up did not stop on SIGTERM")
	}
}

// up is ready, and forwards SIGHUP, only once nginx has written its pid
// file, which nginx does after setting its signal handlers and so after it
// listens.
func TestWaitListeningWaitsForPidFile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ngx := &child{name: "nginx", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cmd: func() *exec.Cmd { return exec.Command("sleep", "60") }}
	if err := ngx.start(); err != nil {
		t.Fatal(err)
	}
	defer ngx.stop(time.Second)
	pidFile := filepath.Join(t.TempDir(), "nginx.pid")
	os.WriteFile(pidFile, []byte("1\n"), 0o644) // a stale one
	done := make(chan error, 1)
	go func() { done <- waitListening(context.Background(), l.Addr().String(), pidFile, ngx) }()
	select {
	case err := <-done:
		t.Fatalf("ready (%v) with nginx listening but its pid file not written", err)
	case <-time.After(300 * time.Millisecond):
	}
	os.WriteFile(pidFile, []byte(strconv.Itoa(ngx.pid())+"\n"), 0o644)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not ready with the pid file written")
	}
}

// With nginx.push_proxy = "none" up binds the push ports; when one is
// taken it says which, and leaves no socket behind: neither the unix
// sockets it made (their files outlive the sockets) nor the other ports.
func TestPushPortTakenLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c := Defaults(dir)
	c.Instances = 2
	c.Nginx.PushProxy = "none"
	c.Push.PortBase = taken.Addr().(*net.TCPAddr).Port - 1 // instance 2's port is taken
	c.Listen = []string{"127.0.0.1:1"}                     // never reached
	fake := filepath.Join(dir, "fake-nginx")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = -t ] && exit 0; exit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.Nginx.Binary = fake
	err = Run(context.Background(), &c, Options{Binary: "/bin/false", StateDir: filepath.Join(dir, "state"),
		Out: io.Discard, Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "push port of instance 2") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run: %v, want instance 2's push port taken", err)
	}
	if left, _ := filepath.Glob(filepath.Join(c.RuntimeDir, "*.sock")); len(left) > 0 {
		t.Errorf("sockets left behind: %v", left)
	}
	if l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(c.PushPort(1))); err != nil {
		t.Errorf("instance 1's push port still bound: %v", err)
	} else {
		l.Close()
	}
}
