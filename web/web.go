// Package web holds the demo page and wsgate.js, the browser client, which
// `wsgate up` writes into its state directory for nginx to serve at "/".
package web

import (
	"bytes"
	"embed"
	"html/template"
	"os"
	"path/filepath"
)

//go:embed index.html demo.js wsgate.js
var files embed.FS

// Scripts are the JavaScript files Write writes beside index.html; nginx
// serves each at "/<name>", and index.html at "/".
var Scripts = []string{"demo.js", "wsgate.js"}

// Page is what the demo page is told about the gateway.
type Page struct {
	Location string // the WebSocket location, e.g. "/ws"
	Upstream bool   // whether client messages reach a backend
}

var index = template.Must(template.ParseFS(files, "index.html"))

// Write writes index.html and Scripts into dir, creating it, with p filled into index.html;
// everything is world-readable, for nginx workers running as another user.
func Write(dir string, p Page) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	for _, name := range append([]string{"index.html"}, Scripts...) {
		b, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		if name == "index.html" {
			var buf bytes.Buffer
			if err := index.Execute(&buf, p); err != nil {
				return err
			}
			b = buf.Bytes()
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
