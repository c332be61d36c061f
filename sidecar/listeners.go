package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
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
// or, when none were passed, the ones it binds itself: unix sockets at the
// configured paths, and with nginx.push_proxy = "none" the instance's push
// port on each push.listen address instead of the push socket. activated
// tells which; sockets passed by activation are not unlinked when closed,
// so the next process finds them in place. push is one socket, or with
// push_proxy = "none" one per push.listen address.
func Listeners(c *config.Config, instance int) (ws net.Listener, push []net.Listener, activated bool, err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, false, fmt.Errorf("socket activation: %w", err)
	}
	if len(named) > 0 {
		ws, pushes, err := pick(named)
		if err == nil {
			err = checkPush(c, instance, pushes)
		}
		if err != nil {
			for _, ls := range named {
				closeAll(ls)
			}
			return nil, nil, false, err
		}
		return ws, pushes, true, nil
	}
	if err := os.MkdirAll(c.RuntimeDir, 0o755); err != nil {
		return nil, nil, false, err
	}
	if ws, err = BindUnix(c.WSSocket(instance)); err != nil {
		return nil, nil, false, err
	}
	pushes, err := BindPush(c, instance)
	if err != nil {
		ws.Close()
		return nil, nil, false, err
	}
	return ws, pushes, false, nil
}

// BindPush binds instance's push sockets, as `wsgate serve` without
// activation and `wsgate up` do: its unix socket, or with nginx.push_proxy
// = "none" its push port on each push.listen address. On an error it
// closes what it bound.
func BindPush(c *config.Config, instance int) ([]net.Listener, error) {
	if !c.DirectPush() {
		l, err := BindUnix(c.PushSocket(instance))
		if err != nil {
			return nil, err
		}
		return []net.Listener{l}, nil
	}
	var ls []net.Listener
	for _, a := range c.PushListenAddrs(instance) {
		l, err := BindTCP(a)
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("push port of instance %d: %w", instance, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// pick takes the listeners of each name from activated sockets: exactly
// one "ws", and one or more "push" (one per push.listen address with
// push_proxy = "none").
func pick(named map[string][]net.Listener) (ws net.Listener, push []net.Listener, err error) {
	for name, ls := range named {
		if name != WSSocketName && name != PushSocketName || name == WSSocketName && len(ls) != 1 {
			err = fmt.Errorf("socket activation: want one socket named %q and one or more named %q, got %d named %q",
				WSSocketName, PushSocketName, len(ls), name)
		}
	}
	if err == nil && (len(named[WSSocketName]) == 0 || len(named[PushSocketName]) == 0) {
		err = fmt.Errorf("socket activation: want sockets named %q and %q (FileDescriptorName=), got %d sockets",
			WSSocketName, PushSocketName, len(named))
	}
	if err != nil {
		return nil, nil, err
	}
	return named[WSSocketName][0], named[PushSocketName], nil
}

// checkPush refuses activated push sockets that do not match the config:
// with push_proxy = "none", one TCP socket on each push.listen address at
// the port the push URLs name; otherwise one unix socket, to which nginx
// proxies. A mismatch (systemd's wsgate-push@.socket without the drop-in
// systemd/README.md describes, or one that misses an address) would leave
// push URLs unanswered.
func checkPush(c *config.Config, instance int, pushes []net.Listener) error {
	got := make([]string, len(pushes))
	for i, l := range pushes {
		got[i] = l.Addr().Network() + " " + l.Addr().String()
	}
	if !c.DirectPush() {
		if len(pushes) != 1 || pushes[0].Addr().Network() != "unix" {
			return fmt.Errorf("socket activation: nginx.push_proxy = %q wants one unix socket named %q (nginx proxies to %s), got %s; a wsgate-push@%d.socket drop-in left from push_proxy = \"none\"? make install removes it (systemd/README.md)",
				c.Nginx.PushProxy, PushSocketName, c.PushSocket(instance), strings.Join(got, ", "), instance)
		}
		return nil
	}
	want := c.PushListenAddrs(instance)
	missing := map[netip.AddrPort]bool{}
	for _, a := range want {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("push.listen: %w", err)
		}
		missing[unmapped(ap)] = true
	}
	ok := len(pushes) == len(want)
	for _, l := range pushes {
		tcp, isTCP := l.Addr().(*net.TCPAddr)
		if !isTCP || !missing[unmapped(tcp.AddrPort())] {
			ok = false
			break
		}
		delete(missing, unmapped(tcp.AddrPort()))
	}
	if !ok {
		return fmt.Errorf("socket activation: nginx.push_proxy = \"none\" wants one TCP socket on each of %s (push.listen at push.port_base + instance - 1, which the push URLs name), got %s; make install writes the wsgate-push@%d.socket drop-in for it (systemd/README.md)",
			strings.Join(want, ", "), strings.Join(got, ", "), instance)
	}
	return nil
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// BindTCP listens on the TCP address addr (IP:port) in its own family
// only: an IPv6 one for IPv6 only, as nginx and systemd's
// BindIPv6Only=ipv6-only do, and 0.0.0.0 for IPv4 only (Go's default
// would be both), so that push.listen can list both "0.0.0.0" and "::".
func BindTCP(addr string) (net.Listener, error) {
	network := "tcp6"
	if ap, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	} else if ap.Addr().Unmap().Is4() {
		network = "tcp4"
	}
	lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
		if network != "tcp6" {
			return nil
		}
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	return lc.Listen(context.Background(), network, addr)
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
