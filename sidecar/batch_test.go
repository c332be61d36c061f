package sidecar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

type batchResult struct {
	Status int
	Error  string
}

func (ts *testServer) batch(t *testing.T, body string) (int, []batchResult) {
	t.Helper()
	status, resp := ts.do(t, "POST", "/ws/batch", "", "application/x-ndjson", []byte(body))
	var out []batchResult
	dec := json.NewDecoder(strings.NewReader(resp))
	for dec.More() {
		var r batchResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("batch response %q: %v", resp, err)
		}
		out = append(out, r)
	}
	return status, out
}

func TestBatch(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBody = 100 })
	a, idA := ts.connect(t)
	b, idB := ts.connect(t)
	bin := []byte{0, 1, 0xff}
	lines := []string{
		fmt.Sprintf(`{"id":%q,"text":"a1"}`, idA),
		fmt.Sprintf(`{"id":%q,"binary":%q}`, idB, base64.StdEncoding.EncodeToString(bin)),
		"",
		fmt.Sprintf(`{"id":%q,"text":"a2 é"}`, idA),
		`{"id":"AAAAAAAAAAAAAAAAAAAAAA","text":"nobody"}`,
		fmt.Sprintf(`{"id":%q,"text":%q}`, idA, strings.Repeat("x", 101)),
		`{"text":"no id"}`,
		fmt.Sprintf(`{"id":%q}`, idA),
		fmt.Sprintf(`{"id":%q,"text":"t","binary":"AA=="}`, idA),
		`not json`,
		fmt.Sprintf(`{"id":%q,"text":"bad `+"\xff"+`"}`, idA),
		fmt.Sprintf(`{"id":%q,"text":""}`, idB),
	}
	status, res := ts.batch(t, strings.Join(lines, "\n"))
	want := []int{204, 204, 204, 404, 413, 400, 400, 400, 400, 400, 204}
	if status != 200 || len(res) != len(want) {
		t.Fatalf("status %d, results %+v", status, res)
	}
	for i, w := range want {
		if res[i].Status != w {
			t.Errorf("result %d: %+v, want %d", i, res[i], w)
		}
	}
	for _, w := range []string{"a1", "a2 é"} {
		if kind, msg := wstest.ReadMessage(t, a); kind != websocket.TextMessage || string(msg) != w {
			t.Fatalf("a got %d %q, want %q", kind, msg, w)
		}
	}
	if kind, msg := wstest.ReadMessage(t, b); kind != websocket.BinaryMessage || !bytes.Equal(msg, bin) {
		t.Fatalf("b got %d %x", kind, msg)
	}
	if _, msg := wstest.ReadMessage(t, b); len(msg) != 0 {
		t.Fatalf("b got %q, want the empty message", msg)
	}
	// Nothing refused reached a: the next message is the marker.
	ts.pushText(t, idA, "marker")
	if _, msg := wstest.ReadMessage(t, a); string(msg) != "marker" {
		t.Fatalf("a got %q", msg)
	}
	if got := metricValue(t, ts, `wsgate_pushes_total{code="204"}`); got != 5 {
		t.Errorf("204s counted %v, want 5", got)
	}
}

func TestBatchLimits(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.Push.MaxBody = 100
		c.Push.MaxBatch = 1000
	})
	_, id := ts.connect(t)
	line := fmt.Sprintf(`{"id":%q,"text":"%s"}`, id, strings.Repeat("y", 50)) + "\n"
	if s, _ := ts.do(t, "POST", "/ws/batch", "", "", []byte(strings.Repeat(line, 20))); s != 413 {
		t.Fatalf("batch over max_batch: %d, want 413", s)
	}
	if s, _ := ts.do(t, "GET", "/ws/batch", "", "", nil); s != 405 {
		t.Fatalf("GET batch: %d, want 405", s)
	}
	// Chunked, no Content-Length: the lines within the bound are delivered
	// and the last result says where reading stopped; the line cut off by
	// the bound gets no result of its own.
	req, _ := http.NewRequest("POST", "http://push/ws/batch", struct{ io.Reader }{strings.NewReader(strings.Repeat(line, 20))})
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	results := strings.Split(strings.TrimSpace(string(body)), "\n")
	whole := 1000 / len(line)
	if resp.StatusCode != 200 || len(results) != whole+1 || !strings.Contains(results[whole], `"status":413`) {
		t.Fatalf("chunked batch over max_batch (%d whole lines in it): %d\n%s", whole, resp.StatusCode, body)
	}
	for i, r := range results[:whole] {
		if r != `{"status":204}` {
			t.Fatalf("line %d: %s", i, r)
		}
	}
	// Each refusal is counted like a single push's, a whole batch's too.
	for code, want := range map[string]int{"204": whole, "405": 1, "413": 2} {
		if got := metricValue(t, ts, `wsgate_pushes_total{code="`+code+`"}`); got != float64(want) {
			t.Errorf("pushes_total{code=%q} = %v, want %d", code, got, want)
		}
	}
}

// The answer is bounded too: a batch of many short bad lines, each with a
// longer error result, is answered up to twice max_batch and a last 413,
// its rest read and not delivered, and its connection serves on.
func TestBatchAnswerIsBounded(t *testing.T) {
	const maxBatch = 1 << 20
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBatch = maxBatch })
	c, id := ts.connect(t)
	in := strings.Repeat("x\n", maxBatch/2-100) + fmt.Sprintf(`{"id":%q,"text":"late"}`, id)
	status, out := ts.do(t, "POST", "/ws/batch", "", "", []byte(in))
	results := strings.Split(strings.TrimSpace(out), "\n")
	if status != 200 || len(out) > 2*maxBatch+1000 || !strings.Contains(results[len(results)-1], `"status":413`) {
		t.Fatalf("%d: %d bytes of answer to %d, ending %s", status, len(out), len(in), results[len(results)-1])
	}
	if got := metricValue(t, ts, `wsgate_pushes_total{code="413"}`); got != 1 {
		t.Errorf("pushes_total{code=\"413\"} = %v, want 1 (the batch cut short)", got)
	}
	if got := metricValue(t, ts, `wsgate_pushes_total{code="400"}`); got != float64(len(results)-1) {
		t.Errorf("pushes_total{code=\"400\"} = %v, want %d (one per bad line answered)", got, len(results)-1)
	}
	ts.pushText(t, id, "after")
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "after" {
		t.Fatalf("got %q: the line after the bound was delivered", msg)
	}
}

// A line is blank only with JSON's own whitespace in it; one of other
// spaces is not JSON and gets its 400, so that results stay in step with
// lines. A lone surrogate escape, which encoding/json would turn into
// U+FFFD, is refused rather than altered; U+FFFD itself is delivered.
func TestBatchLineEdges(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	msg := func(text string) string { return fmt.Sprintf(`{"id":%q,"text":"%s"}`, id, text) + "\n" }
	body := " \t\r\n" + "\u00a0\n" + "\u3000\n" + "\v\n" + msg(`a\ud800b`) + msg(`c\udc00\ud800d`) +
		fmt.Sprintf(`{"id":%q,"note":"\ufffd","text":"a\ud800b"}`, id) + "\n" + msg(`\\ufffd\ud800`) +
		msg("\ufffd") + msg(`\uFFFD`) + msg(`\ud83d\ude00`) + msg(`\\ud800`)
	status, res := ts.batch(t, body)
	want := []int{400, 400, 400, 400, 400, 400, 400, 204, 204, 204, 204}
	if status != 200 || len(res) != len(want) {
		t.Fatalf("%d, %d results: %+v", status, len(res), res)
	}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("line %d: %+v, want %d", i, r, want[i])
		}
	}
	for _, want := range []string{"\ufffd", "\ufffd", "\U0001F600", `\ud800`} {
		if _, got := wstest.ReadMessage(t, c); string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// A batch of many messages for one client keeps their order.
func TestBatchOrder(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.WebSocket.SendQueue = 1000 })
	c, id := ts.connect(t)
	var body strings.Builder
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&body, `{"id":%q,"text":"%d"}`+"\n", id, i)
	}
	if status, res := ts.batch(t, body.String()); status != 200 || len(res) != 500 {
		t.Fatalf("status %d, %d results", status, len(res))
	}
	for i := 0; i < 500; i++ {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, msg)
		}
	}
}

func TestLoneSurrogate(t *testing.T) {
	for raw, want := range map[string]bool{
		`"abc"`:                false,
		`"\ud83d\ude00"`:       false, // a pair
		`"\uD83D\uDE00"`:       false,
		`"\ud800"`:             true,
		`"\udc00"`:             true,
		`"\ud800x"`:            true,
		`"\ud800\u0041"`:       true,
		`"\ud800\ud800\udc00"`: true,
		`"\\ud800"`:            false, // an escaped backslash, then text
		`"\\\ud800"`:           true,
		`"\ufffd"`:             false,
	} {
		if got := loneSurrogate([]byte(raw)); got != want {
			t.Errorf("%s: %v, want %v", raw, got, want)
		}
	}
}
