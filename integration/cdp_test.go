package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// A minimal Chrome DevTools Protocol client: enough to open a page, evaluate
// JavaScript in it and take a screenshot, over the gorilla/websocket this
// module already depends on.

// findChromium returns Debian's chromium (or another Chromium/Chrome on
// PATH), or "" when there is none.
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is a headless Chromium driven over the DevTools protocol.
type browser struct {
	conn *websocket.Conn
	mu   sync.Mutex // serializes calls
	next int
}

var devtoolsURL = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts headless Chromium with a fresh profile, connects to
// it and stops it at cleanup; it skips the test when there is no Chromium.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	bin := findChromium()
	if bin == "" {
		t.Skip("no chromium binary (apt-get install chromium); .ci/run installs it")
	}
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--window-size=1000,1000", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers too are stopped at cleanup
	log := &wstest.Output{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browser{}
	t.Cleanup(func() {
		if b.conn != nil {
			b.conn.Close()
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("chromium output:\n%s", log)
		}
	})
	var url string
	waitFor(t, 30*time.Second, "chromium's DevTools URL", func() bool {
		if m := devtoolsURL.FindStringSubmatch(log.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	var err error
	if b.conn, _, err = websocket.DefaultDialer.Dial(url, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

// call sends one command (to the browser when session is "", else to that
// page session), waits for its reply and decodes the result into result.
func (b *browser) call(session, method string, params, result any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := b.conn.WriteJSON(msg); err != nil {
		return err
	}
	b.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := b.conn.ReadJSON(&reply); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if reply.ID != id {
			continue // an event
		}
		if reply.Error != nil {
			return fmt.Errorf("%s: %s", method, reply.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(reply.Result, result)
	}
}

// page is one browser tab.
type page struct {
	b       *browser
	session string
}

// open opens url in a new tab.
func (b *browser) open(t *testing.T, url string) *page {
	t.Helper()
	var target struct{ TargetID string }
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatal(err)
	}
	var attached struct{ SessionID string }
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatal(err)
	}
	p := &page{b: b, session: attached.SessionID}
	var nav struct{ ErrorText string }
	if err := b.call(p.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil || nav.ErrorText != "" {
		t.Fatalf("navigate to %s: %v %s", url, err, nav.ErrorText)
	}
	return p
}

// eval evaluates a JavaScript expression in the page and returns its value
// decoded from JSON as a string, bool, float64, map or slice.
func (p *page) eval(t *testing.T, expr string) any {
	t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	}, &r)
	if err != nil {
		t.Fatal(err)
	}
	if e := r.ExceptionDetails; e != nil {
		t.Fatalf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	return r.Result.Value
}

// text is eval for an expression whose value is a string ("" for anything
// else, such as null).
func (p *page) text(t *testing.T, expr string) string {
	t.Helper()
	s, _ := p.eval(t, expr).(string)
	return s
}

// screenshot saves the page as a PNG at path.
func (p *page) screenshot(t *testing.T, path string) {
	t.Helper()
	var r struct{ Data string }
	if err := p.b.call(p.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
