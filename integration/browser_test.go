package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/metrictest"
)

// TestBrowserDemo opens the demo page that `wsgate up` serves at "/" in
// headless Chromium and checks, through real nginx and real sidecars, what
// wsgate.js and the page do: the welcome and a curl command for it, text and
// binary pushes, a message sent to the gateway, reconnecting after a killed
// sidecar (1006) and a restarted one (1012), and staying closed after a
// DELETE (1000) until asked to reconnect. It saves screenshots into
// $WSGATE_ARTIFACTS (default: a temp dir) and logs their paths.
func TestBrowserDemo(t *testing.T) {
	b := startBrowser(t)
	g := startUp(t, 2, "127.0.0.1", "")
	hc := httpClient("")
	artifacts := os.Getenv("WSGATE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	home := "http://" + strings.TrimPrefix(strings.TrimSuffix(g.clientWS, "/ws"), "ws://") + "/"
	p := b.open(t, home)
	t.Cleanup(func() {
		if t.Failed() {
			shot := filepath.Join(artifacts, "browser-demo-failed.png")
			p.screenshot(t, shot)
			t.Logf("screenshot: %s", shot)
		}
	})

	pushURL := p.waitWelcome(t, "")
	u, err := url.Parse(pushURL)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.text(t, `document.getElementById("id").textContent`); got != u.User.Username() {
		t.Errorf("page shows id %q, want %q", got, u.User.Username())
	}
	if got, want := p.text(t, `document.getElementById("curl").textContent`), "curl -d 'hello' "+pushURL; got != want {
		t.Errorf("page shows %q, want %q", got, want)
	}

	text := "héllo from the test ✓"
	pushTo(t, hc, pushURL, "", []byte(text))
	p.waitLog(t, "text", text)
	pushTo(t, hc, pushURL, "application/octet-stream", []byte{0, 1, 0x7f, 0xfe, 0xff})
	p.waitLog(t, "binary", "5 bytes: 00 01 7f fe ff")

	// The send box reaches the sidecar, which without an upstream counts
	// the message as discarded.
	metrics := fmt.Sprintf("http://%s/metrics", u.Host)
	before := discarded(t, hc, metrics)
	p.eval(t, `document.getElementById("message").value = "to the backend";
		document.getElementById("send").requestSubmit(); true`)
	p.waitLog(t, "sent", "to the backend")
	waitFor(t, 10*time.Second, "the sidecar to count the sent message", func() bool {
		return discarded(t, hc, metrics) == before+1
	})
	shot := filepath.Join(artifacts, "browser-demo.png")
	p.screenshot(t, shot)
	t.Logf("screenshot: %s", shot)

	// SIGKILL the sidecar holding the page: nginx drops the connection
	// (1006), up restarts the sidecar, wsgate.js reconnects.
	syscall.Kill(g.sidecarPID(t, g.instanceOf(t, pushURL)), syscall.SIGKILL)
	p.waitLog(t, "close", "1006", "reconnecting in")
	pushURL = p.waitWelcome(t, pushURL)
	pushTo(t, hc, pushURL, "", []byte("after the crash"))
	p.waitLog(t, "text", "after the crash")

	// SIGTERM: the sidecar closes its clients with 1012 (service restart).
	syscall.Kill(g.sidecarPID(t, g.instanceOf(t, pushURL)), syscall.SIGTERM)
	p.waitLog(t, "close", "1012", "reconnecting in")
	pushURL = p.waitWelcome(t, pushURL)
	pushTo(t, hc, pushURL, "", []byte("after the restart"))
	p.waitLog(t, "text", "after the restart")

	// DELETE closes the client with 1000: wsgate.js stays closed until
	// connect() (the Reconnect button).
	if code, body := do(t, hc, "DELETE", pushURL, "", nil); code != 204 {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	p.waitLog(t, "close", "1000", "not reconnecting")
	if got := p.text(t, `document.getElementById("state").textContent`); got != "closed" {
		t.Errorf("after DELETE the page is %q, want closed", got)
	}
	p.eval(t, `document.getElementById("reconnect").click(); true`)
	pushURL = p.waitWelcome(t, pushURL)
	pushTo(t, hc, pushURL, "", []byte("after reconnecting"))
	p.waitLog(t, "text", "after reconnecting")

	// The page's list is bounded: the 500 newest lines, each text cut.
	for i := 0; i < 510; i++ {
		pushTo(t, hc, pushURL, "", []byte(fmt.Sprint("bulk ", i)))
	}
	pushTo(t, hc, pushURL, "", []byte(strings.Repeat("y", 50000)))
	p.waitLog(t, "text", "(48000 more)")
	if n := p.text(t, `String(document.querySelectorAll("#log li").length)`); n != "500" {
		t.Errorf("the page's list holds %s lines after 500 and more, want 500", n)
	}

	shot = filepath.Join(artifacts, "browser-demo-end.png")
	p.screenshot(t, shot)
	t.Logf("screenshot: %s", shot)
}

// TestBrowserJSONWelcome checks that wsgate.js understands welcome = "json".
func TestBrowserJSONWelcome(t *testing.T) {
	b := startBrowser(t)
	g := startUp(t, 1, "127.0.0.1", "[websocket]\nwelcome = \"json\"\n")
	p := b.open(t, "http://"+strings.TrimPrefix(strings.TrimSuffix(g.clientWS, "/ws"), "ws://")+"/")
	pushURL := p.waitWelcome(t, "")
	u, err := url.Parse(pushURL)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.text(t, `document.getElementById("id").textContent`); got != u.User.Username() {
		t.Errorf("page shows id %q, want %q", got, u.User.Username())
	}
	pushTo(t, httpClient(""), pushURL, "", []byte("json welcome"))
	p.waitLog(t, "text", "json welcome")
}

// waitWelcome waits until the page is open with a push URL other than old
// and returns it.
func (p *page) waitWelcome(t *testing.T, old string) string {
	t.Helper()
	var got string
	waitFor(t, 30*time.Second, "a new welcome on the page", func() bool {
		got = p.text(t, `document.getElementById("state")?.textContent === "open"
			? document.querySelector(".push-url")?.textContent : ""`)
		return got != "" && got != old
	})
	return got
}

// waitLog waits until the page's message list has an entry of kind (text,
// binary, sent, close, ...) whose text contains every one of parts.
func (p *page) waitLog(t *testing.T, kind string, parts ...string) {
	t.Helper()
	k, _ := json.Marshal(kind)
	q, _ := json.Marshal(parts)
	expr := fmt.Sprintf(`Array.from(document.querySelectorAll("#log li")).some(
		(li) => li.querySelector(".kind").textContent === %s && %s.every((s) => li.textContent.includes(s)))`, k, q)
	waitFor(t, 30*time.Second, fmt.Sprintf("%s %q on the page", kind, parts), func() bool {
		return p.eval(t, expr) == true
	})
}

// instanceOf is the sidecar instance behind a push URL: its port is
// port_base + i - 1.
func (g *gateway) instanceOf(t *testing.T, pushURL string) int {
	t.Helper()
	u, err := url.Parse(pushURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return port - g.portBase + 1
}

// pushTo pushes body to a push URL and fails unless it is queued (204).
func pushTo(t *testing.T, hc *http.Client, pushURL, contentType string, body []byte) {
	t.Helper()
	if code, resp := post(t, hc, pushURL, contentType, body); code != 204 {
		t.Fatalf("push to %s = %d %s", pushURL, code, resp)
	}
}

// discarded reads wsgate_client_messages_discarded_total from a sidecar's
// metrics.
func discarded(t *testing.T, hc *http.Client, metricsURL string) int {
	t.Helper()
	code, body := do(t, hc, "GET", metricsURL, "", nil)
	if code != 200 {
		t.Fatalf("GET %s = %d", metricsURL, code)
	}
	v, found, err := metrictest.Sample(strings.NewReader(body), "wsgate_client_messages_discarded_total")
	if err != nil || !found {
		t.Fatalf("%s: wsgate_client_messages_discarded_total: %v\n%s", metricsURL, err, body)
	}
	return int(v)
}
