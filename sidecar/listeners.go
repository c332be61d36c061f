package sidecar

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/wsgate/wsgate/config"
)

// Names of the activated sockets (FileDescriptorName= in the .socket units,
// LISTEN_FDNAMES under `wsgate up`).
const (
	WSSocketName   = "ws"
	PushSocketName = "push"
)

// socketMode lets nginx's worker user connect to sockets the sidecar binds
// itself; access is controlled by the permissions of runtime_dir.
const socketMode = 0o666

// Listeners returns instance's WebSocket and push listeners: the sockets
// passed by socket activation (systemd or `wsgate up`), named "ws" and "push",
// or, when none were passed, unix sockets bound at the configured paths.
// activated tells which; sockets passed by activation are not unlinked when
// closed, so the next process finds them in place.
func Listeners(c *config.Config, instance int) (ws, push net.Listener, activated bool, err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, false, fmt.Errorf("socket activation: %w", err)
	}
	if len(named) > 0 {
		ws, push, err = pick(named)
		return ws, push, true, err
	}
	if err := os.MkdirAll(c.RuntimeDir, 0o755); err != nil {
		return nil, nil, false, err
	}
	if ws, err = BindUnix(c.WSSocket(instance)); err != nil {
		return nil, nil, false, err
	}
	if push, err = BindUnix(c.PushSocket(instance)); err != nil {
		ws.Close()
		return nil, nil, false, err
	}
	return ws, push, false, nil
}

// pick takes exactly one listener of each name from activated sockets.
func pick(named map[string][]net.Listener) (ws, push net.Listener, err error) {
	for name, ls := range named {
		if (name != WSSocketName && name != PushSocketName) || len(ls) != 1 {
			err = fmt.Errorf("socket activation: want one socket named %q and one named %q, got %d named %q",
				WSSocketName, PushSocketName, len(ls), name)
		}
	}
	if err == nil && (len(named[WSSocketName]) == 0 || len(named[PushSocketName]) == 0) {
		err = fmt.Errorf("socket activation: want sockets named %q and %q (FileDescriptorName=), got %d sockets",
			WSSocketName, PushSocketName, len(named))
	}
	if err != nil {
		for _, ls := range named {
			for _, l := range ls {
				l.Close()
			}
		}
		return nil, nil, err
	}
	return named[WSSocketName][0], named[PushSocketName][0], nil
}

// BindUnix listens on path with a mode nginx's workers can connect to,
// first removing a stale socket file that nobody serves any more. A socket
// another process still serves is an error.
func BindUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		// Only a refused connection means nobody listens: a full
		// backlog (EAGAIN) or a timeout is a listener that is busy.
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s may be in use by another process: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, socketMode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
