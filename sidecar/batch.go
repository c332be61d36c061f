package sidecar

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// batchLine is one message of a batch push: {"id": ..., "text": ...} or
// {"id": ..., "binary": "<base64>"}.
type batchLine struct {
	ID     string  `json:"id"`
	Text   *string `json:"text"`
	Binary []byte  `json:"binary"`
}

// serveBatch carries out POST <location>/batch: newline-delimited JSON, one
// message per line, answered 200 with one JSON result per non-blank line,
// in order: {"status":204} or {"status":4xx/503,"error":...}. Lines are
// delivered as they are read, so a client named on several lines gets them
// in order. The body is bounded by push.max_batch, each message by
// push.max_body, and the answer, held until the end, by twice
// push.max_batch.
func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request, arrived int64) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.metrics.pushed(http.StatusMethodNotAllowed)
		writeError(w, &pushError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed: POST newline-delimited JSON"})
		return
	}
	if r.ContentLength > s.maxBatch {
		s.metrics.pushed(http.StatusRequestEntityTooLarge)
		writeError(w, &pushError{http.StatusRequestEntityTooLarge, "batch exceeds push.max_batch"})
		return
	}
	body := &errReader{r: http.MaxBytesReader(w, r.Body, s.maxBatch)}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 4096), int(s.maxBatch))
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if atEOF && len(data) > 0 && bytes.IndexByte(data, '\n') < 0 && body.err != io.EOF {
			return len(data), nil, nil // cut off by max_batch: not a line
		}
		return bufio.ScanLines(data, atEOF)
	})
	var out bytes.Buffer
	full := false // the answer reached its bound
	for sc.Scan() {
		line := bytes.Trim(sc.Bytes(), jsonSpace)
		if len(line) == 0 {
			continue
		}
		if int64(out.Len()) >= 2*s.maxBatch {
			full = true
			break
		}
		err := s.batchLine(line, arrived)
		if err == nil {
			s.metrics.pushed(http.StatusNoContent)
			out.WriteString(`{"status":204}` + "\n")
			continue
		}
		s.metrics.pushed(err.status)
		b, _ := json.Marshal(struct {
			Status int    `json:"status"`
			Error  string `json:"error"`
		}{err.status, err.reason})
		out.Write(append(b, '\n'))
	}
	if full {
		// Many short bad lines, each with an error result longer than
		// itself: the answer, held in memory, stops at twice max_batch.
		s.metrics.pushed(http.StatusRequestEntityTooLarge)
		out.WriteString(`{"status":413,"error":"the answer exceeds twice push.max_batch; the lines after this were not delivered"}` + "\n")
	} else if err := sc.Err(); err != nil {
		status, reason := http.StatusBadRequest, "reading batch: "+err.Error()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, bufio.ErrTooLong) {
			status, reason = http.StatusRequestEntityTooLarge, "batch exceeds push.max_batch; the lines after this were not read"
		}
		s.metrics.pushed(status)
		out.WriteString(`{"status":` + strconv.Itoa(status) + `,"error":` + strconv.Quote(reason) + "}\n")
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	w.Write(out.Bytes())
}

// jsonSpace is JSON's whitespace (RFC 8259 §2) but LF, which ends lines:
// what a blank line may hold. Other spaces, U+00A0 say, make a line that
// is not blank, and gets its result.
const jsonSpace = " \t\r"

// errReader remembers the error that ended its reads.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// batchLine delivers one line of a batch; nil means queued.
func (s *Server) batchLine(line []byte, arrived int64) *pushError {
	// encoding/json would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(line) {
		return &pushError{http.StatusBadRequest, "line is not valid UTF-8"}
	}
	var l batchLine
	if err := json.Unmarshal(line, &l); err != nil {
		return &pushError{http.StatusBadRequest, "line is not a JSON object {\"id\":...,\"text\"|\"binary\":...}: " + err.Error()}
	}
	if l.ID == "" {
		return &pushError{http.StatusBadRequest, "line has no \"id\""}
	}
	if (l.Text == nil) == (l.Binary == nil) {
		return &pushError{http.StatusBadRequest, "line needs exactly one of \"text\" and \"binary\""}
	}
	f := frame{kind: websocket.BinaryMessage, data: l.Binary, at: arrived}
	if l.Text != nil {
		// encoding/json turns an escaped lone surrogate (\ud800) into
		// U+FFFD: that would alter the message.
		if strings.Contains(*l.Text, "\uFFFD") {
			var raw struct {
				Text json.RawMessage `json:"text"`
			}
			if json.Unmarshal(line, &raw) == nil && loneSurrogate(raw.Text) {
				return &pushError{http.StatusBadRequest, "\"text\" has a lone UTF-16 surrogate escape, which is not a character"}
			}
		}
		f = frame{kind: websocket.TextMessage, data: []byte(*l.Text), at: arrived}
	}
	if int64(len(f.data)) > s.maxBody {
		return errTooLarge
	}
	c := s.lookup(l.ID)
	if c == nil {
		return errNoClient
	}
	return s.deliver(c, f)
}

// loneSurrogate reports whether the JSON string raw has a \u escape of a
// UTF-16 surrogate that is not half of a pair.
func loneSurrogate(raw []byte) bool {
	hex4 := func(i int) (rune, bool) { // the 4 hex digits at raw[i:]
		if i+4 > len(raw) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i:i+4]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped byte: a \\ is not the start of another escape
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(i + 1)
		if !ok {
			return false // not valid JSON, which Unmarshal refused already
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF: // a low half alone
			return true
		case r >= 0xD800 && r <= 0xDBFF: // a high half: a low one must follow
			if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if r2, ok := hex4(i + 3); ok && r2 >= 0xDC00 && r2 <= 0xDFFF {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}
