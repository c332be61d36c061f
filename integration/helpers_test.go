package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
)

// writeConfig writes a TOML file into dir and returns its path.
func writeConfig(t *testing.T, dir, toml string) string {
	t.Helper()
	p := filepath.Join(dir, "wsgate.toml")
	if err := os.WriteFile(p, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// unixListener listens on a fresh socket in dir and returns it as the file
// socket activation would pass.
func unixListener(t *testing.T, path string) *os.File {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // f keeps the socket open
	t.Cleanup(func() { os.Remove(path) })
	t.Cleanup(func() { f.Close() })
	return f
}

// dialWS opens a WebSocket with the given dialer target (a ws:// URL; when
// unixPath is set, the connection goes to that socket) and returns it with
// its welcome.
func dialWS(url, unixPath string) (*websocket.Conn, string, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if unixPath != "" {
		d.NetDial = func(_, _ string) (net.Conn, error) { return net.Dial("unix", unixPath) }
	}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, "", &welcomeError{err}
	}
	c.SetReadDeadline(time.Time{})
	return c, string(msg), nil
}

// welcomeError is a connection that was accepted (101) but ended before its
// welcome arrived.
type welcomeError struct{ err error }

func (e *welcomeError) Error() string { return "no welcome: " + e.err.Error() }

// mustDial is dialWS that fails the test on error and closes at cleanup.
func mustDial(t *testing.T, url, unixPath string) (*websocket.Conn, string) {
	t.Helper()
	c, welcome, err := dialWS(url, unixPath)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, welcome
}

// httpClient sends requests to the unix socket at path, or over TCP when
// path is "".
func httpClient(path string) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	if path != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// post sends body to a push URL as given in a welcome (the id travels as
// the URL's user name, as curl sends it) and returns status and body.
func post(t *testing.T, hc *http.Client, url, contentType string, body []byte) (int, string) {
	t.Helper()
	return do(t, hc, "POST", url, contentType, body)
}

func do(t *testing.T, hc *http.Client, method, url, contentType string, body []byte) (int, string) {
	t.Helper()
	status, answer, err := tryDo(hc, method, url, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, answer
}

// tryDo is do for goroutines other than the test's: it returns the error.
func tryDo(hc *http.Client, method, url, contentType string, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// waitFor fails the test unless cond turns true within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstURL is the first push URL of a "urls" welcome.
func firstURL(welcome string) string { return strings.Split(welcome, ",")[0] }

// needStreamModule skips t when nginx's stream module is not installed.
func needStreamModule(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(config.Default().Nginx.StreamModule); err != nil {
		t.Skipf("no nginx stream module (apt-get install libnginx-mod-stream; .ci/run installs it): %v", err)
	}
}

// forPushProxies runs test once for each nginx.push_proxy, with extra TOML
// for startUp that sets it.
func forPushProxies(t *testing.T, test func(t *testing.T, extra string)) {
	for _, proxy := range []string{"http", "stream", "none"} {
		t.Run(proxy, func(t *testing.T) {
			if proxy == "stream" {
				needStreamModule(t)
			}
			test(t, fmt.Sprintf("[nginx]\npush_proxy = %q\n", proxy))
		})
	}
}
