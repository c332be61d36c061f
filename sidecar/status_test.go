package sidecar

import (
	"encoding/json"
	"net/http"
	"os"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

// getStatus reads and decodes GET /status.
func getStatus(t *testing.T, ts *testServer) Status {
	t.Helper()
	resp, err := ts.http.Get("http://push/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Fatalf("GET /status: %d %s", resp.StatusCode, ct)
	}
	var st Status
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestStatus(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.Push.MaxBody = 1000
		c.WebSocket.SendQueue = 7
		c.WebSocket.SendQueueBytes = 5000
		c.WebSocket.SlowClient = "drop"
	})
	st := getStatus(t, ts)
	if st.Instance != 1 || st.PID != os.Getpid() || st.Version != "dev" || st.GoVersion == "" || st.Connections != 0 {
		t.Errorf("fresh status %+v", st)
	}
	want := Limits{MaxBody: 1000, MaxBatch: 16 << 20, MaxMessage: 1 << 20, SendQueue: 7, SendQueueBytes: 5000,
		SlowClient: "drop", PingIntervalSeconds: 300, IdleTimeoutSeconds: 360}
	if st.Limits != want {
		t.Errorf("limits %+v, want %+v", st.Limits, want)
	}

	c, id := ts.connect(t)
	ts.connect(t)
	ts.pushText(t, id, "a")
	wstest.ReadMessage(t, c)
	ts.pushText(t, "nobody", "b")
	c.WriteMessage(websocket.TextMessage, []byte("up"))
	// The sent counter moves just after the write, which the client can
	// read first.
	eventually(t, "messages counted", func() bool {
		c := getStatus(t, ts).Counters
		return c.MessagesReceived == 1 && c.MessagesSent == 1
	})
	st = getStatus(t, ts)
	got := st.Counters
	if st.Connections != 2 || got.Connects != 2 || got.Pushes != 2 || got.PushesByCode["204"] != 1 ||
		got.PushesByCode["404"] != 1 || got.MessagesSent != 1 || got.Drops != 0 || got.Disconnects != 0 {
		t.Errorf("status after 2 connects and 2 pushes: %+v", st)
	}
	if st.UptimeSeconds <= 0 {
		t.Errorf("uptime %v", st.UptimeSeconds)
	}
}

func TestStatusVersion(t *testing.T) {
	ts := newTestServer(t, nil, WithVersion("v1.2.3"))
	if v := getStatus(t, ts).Version; v != "v1.2.3" {
		t.Errorf("version %q", v)
	}
	if v := metricValue(t, ts, `wsgate_build_info{version="v1.2.3"}`); v != 1 {
		t.Errorf("wsgate_build_info = %v", v)
	}
}

// /metrics and /status are read-only: GET and HEAD, 405 with Allow else.
func TestStatusAndMetricsMethods(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, path := range []string{"/metrics", "/status"} {
		for _, m := range []string{"GET", "HEAD"} {
			if status, _ := ts.do(t, m, path, "", "", nil); status != 200 {
				t.Errorf("%s %s: %d", m, path, status)
			}
		}
		for _, m := range []string{"POST", "DELETE", "PUT"} {
			req, _ := http.NewRequest(m, "http://push"+path, nil)
			resp, err := ts.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d Allow %q", m, path, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	}
}
